//! The namespace lab: real `xorlay run` routers, one network namespace each,
//! addresses from 198.18.0.0/15 only. Every node runs a router, the
//! generator's and the sink's included: the traffic generator and the sink
//! are local applications of those two routers (`dataplane.app`), so their
//! packets enter and leave the overlay like any application's.
//!
//! Topologies:
//! - `Chain`: gen - r1 - ... - rN - sink, one veth pair per link, each node
//!   configured with its adjacent nodes as known peers.
//! - `Sites`: two L2 segments (bridges in a switch namespace). gen is on site
//!   A only, sink on site B only, every router on both. Every node bootstraps
//!   from one seed (r1) and discovers the rest; traffic from gen to sink must
//!   cross a router, and there are several to fail over to.
//! - `Mesh`: a random connected graph of point-to-point links (a random
//!   spanning tree plus random extra links, each node's degree capped at a
//!   random target), drawn from OS randomness per lab; each node configured
//!   with its link peers as known peers, and every node has a local
//!   application, so any node can send to any other.
//!
//! Everything the lab creates (namespaces, the veths and bridges inside
//! them, a scratch folder with keys, configs and logs) is removed when the
//! `Lab` is dropped, also on panic; router processes are stopped first.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use xorlay::core::NodeId;
use xorlay::core::identity::Identity;
use xorlay::core::routing::beacon_level_of;
use xorlay::io::keyfile;
use xorlay::wire::overlay::DEFAULT_PORT;

use crate::netns::{self, ip};

/// Namespace names of this crate start with this, then the owner's PID.
const PREFIX: &str = "xl";
/// Most routers between gen and sink.
pub const ROUTERS_MAX: usize = 16;
/// Most routers between gen and sink in [`Topology::Mesh`] (64 nodes).
pub const MESH_ROUTERS_MAX: usize = 62;
/// Most links per node in [`Topology::Mesh`].
pub const MESH_DEGREE_MAX: usize = 8;
/// The links per node of a mesh unless a test asks for other bounds.
pub const MESH_DEGREE_DEFAULT: (usize, usize) = (2, 4);
/// How long a router may take to come up (admin socket answers).
const ROUTER_START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a router may take to exit after SIGTERM before SIGKILL.
const ROUTER_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// The local application port of the gen and sink routers.
pub const APP_PORT: u16 = 9000;

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// The shape of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// A line of point-to-point links; neighbors configured as known peers.
    Chain,
    /// Two L2 segments joined by dual-homed routers; discovery from one seed.
    Sites,
    /// A random connected graph of point-to-point links: each node gets a
    /// random degree target in `degree.0..=degree.1` (at least 2, at most
    /// [`MESH_DEGREE_MAX`], below the node count less one: never a full
    /// mesh) and no more links than that; link peers configured as known
    /// peers. `LabOptions::routers` + 2 nodes, every one with a local
    /// application ([`Lab::app_addr`]). The links are [`Lab::mesh_edges`].
    Mesh {
        /// Lowest and highest degree target.
        degree: (usize, usize),
    },
}

/// Options of a lab.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// The shape.
    pub topology: Topology,
    /// Routers between gen and sink.
    pub routers: usize,
    /// XDP mode in the router configs.
    pub xdp_mode: String,
    /// Workers per router.
    pub workers: usize,
    /// `[xdp] route_cache` in the relays' configs (routers 1..=N): false
    /// sends every packet through the io_uring workers.
    pub relay_route_cache: bool,
    /// More TOML for the relays' configs (tables such as `[xdp.limits]`).
    pub relay_config: String,
    /// `control.beacon_level` of every router (0: plain distance vector;
    /// above, compact routing with the location service).
    pub beacon_level: u8,
}

impl Default for LabOptions {
    fn default() -> LabOptions {
        LabOptions {
            topology: Topology::Chain,
            routers: 3,
            xdp_mode: "native".into(),
            workers: 1,
            relay_route_cache: true,
            relay_config: String::new(),
            beacon_level: 0,
        }
    }
}

/// One interface of a node.
#[derive(Debug, Clone)]
pub struct Iface {
    /// Its name inside the node's namespace.
    pub name: String,
    /// Its IPv4 address.
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Which segment or link it is on (nodes sharing one reach each other).
    pub segment: usize,
}

/// One node: a router in its own namespace.
#[derive(Debug, Clone)]
pub struct Node {
    /// Role: "gen", "r1".., "sink".
    pub role: String,
    /// Its network namespace.
    pub netns: String,
    /// Its identity.
    pub identity: Identity,
    /// Its interfaces.
    pub ifaces: Vec<Iface>,
}

impl Node {
    /// The node ID.
    pub fn id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// Its overlay address on `segment`, if it is on it.
    pub fn addr_on(&self, segment: usize) -> Option<SocketAddr> {
        self.ifaces
            .iter()
            .find(|i| i.segment == segment)
            .map(|i| SocketAddr::V4(SocketAddrV4::new(i.addr, DEFAULT_PORT)))
    }

    fn segments(&self) -> BTreeSet<usize> {
        self.ifaces.iter().map(|i| i.segment).collect()
    }
}

#[derive(Debug)]
struct Process {
    child: Child,
    index: usize,
}

/// The lab. Dropping it stops routers and removes everything it made.
#[derive(Debug)]
pub struct Lab {
    /// gen, r1..rN, sink.
    pub nodes: Vec<Node>,
    /// Scratch folder: keys, configs, admin sockets, logs.
    pub dir: PathBuf,
    /// The options it was built with.
    pub options: LabOptions,
    namespaces: Vec<String>,
    processes: Vec<Process>,
    xorlay_bin: PathBuf,
    /// Nodes whose config lists no seeds (restarted to rejoin from kept peers).
    seedless: BTreeSet<usize>,
    /// The links of a [`Topology::Mesh`] (node index pairs, lower first;
    /// link `e` is segment `e`); empty otherwise.
    edges: Vec<(usize, usize)>,
    /// Pass-through XDP programs on veths that receive XDP_TX or
    /// XDP_REDIRECT frames but run no router (the switch's bridge ports:
    /// None; the benchmark endpoints' interfaces: their node index).
    passthrough: Vec<(Option<usize>, aya::Ebpf)>,
}

impl Lab {
    /// Builds the topology (no routers started yet).
    pub fn new(options: LabOptions) -> anyhow::Result<Lab> {
        let routers_max = match options.topology {
            Topology::Mesh { .. } => MESH_ROUTERS_MAX,
            Topology::Chain | Topology::Sites => ROUTERS_MAX,
        };
        if options.routers == 0 || options.routers > routers_max {
            bail!(
                "a lab of this topology has 1 to {routers_max} routers, not {}",
                options.routers
            );
        }
        let edges = match options.topology {
            Topology::Mesh { degree } => {
                let mut seed = [0u8; 8];
                getrandom::getrandom(&mut seed)
                    .map_err(|e| anyhow::anyhow!("the OS gave no random bytes: {e}"))?;
                random_mesh(options.routers + 2, degree, u64::from_le_bytes(seed))?
            }
            Topology::Chain | Topology::Sites => Vec::new(),
        };
        require_root()?;
        let xorlay_bin = find_xorlay_bin()?;
        clean_stale();
        let tag = format!(
            "{PREFIX}{}x{}",
            std::process::id(),
            LAB_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("xorlay-lab-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

        let identities = random_identities(options.routers)?;
        let count = identities.len();
        let nodes = identities
            .into_iter()
            .enumerate()
            .map(|(i, identity)| {
                let role = match i {
                    0 => "gen".to_string(),
                    i if i == count - 1 => "sink".to_string(),
                    i => format!("r{i}"),
                };
                let ifaces = match options.topology {
                    Topology::Chain => chain_ifaces(i, count),
                    Topology::Sites => sites_ifaces(i, count),
                    Topology::Mesh { .. } => mesh_ifaces(i, &edges),
                };
                Node {
                    netns: format!("{tag}-{role}"),
                    role,
                    identity,
                    ifaces,
                }
            })
            .collect();
        let mut lab = Lab {
            nodes,
            dir,
            options,
            namespaces: Vec::new(),
            processes: Vec::new(),
            xorlay_bin,
            seedless: BTreeSet::new(),
            edges,
            passthrough: Vec::new(),
        };
        lab.build(&tag)?; // on error, Drop removes what was made
        Ok(lab)
    }

    /// Creates a namespace per node, then the links of the topology, then
    /// the interfaces' addresses and settings.
    fn build(&mut self, tag: &str) -> anyhow::Result<()> {
        for node in &self.nodes {
            ip(&["netns", "add", &node.netns])?;
            self.namespaces.push(node.netns.clone());
            ip(&["-n", &node.netns, "link", "set", "lo", "up"])?;
        }
        match self.options.topology {
            Topology::Chain => self.link_chain()?,
            Topology::Sites => self.link_sites(tag)?,
            Topology::Mesh { .. } => self.link_mesh()?,
        }
        self.configure_interfaces()
    }

    /// The links of a [`Topology::Mesh`], as node index pairs (lower index
    /// first); empty in the other topologies.
    pub fn mesh_edges(&self) -> &[(usize, usize)] {
        &self.edges
    }

    /// The mesh's links as text: `gen-r3 r3-r7 ...`.
    pub fn mesh_edges_text(&self) -> String {
        self.edges
            .iter()
            .map(|&(a, b)| format!("{}-{}", self.nodes[a].role, self.nodes[b].role))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// [`Topology::Chain`]: a veth pair between each two neighbors.
    fn link_chain(&self) -> anyhow::Result<()> {
        for pair in self.nodes.windows(2) {
            let (left, right) = (&pair[0], &pair[1]);
            // Created directly inside the two namespaces: the host's
            // own namespace never sees these links.
            ip(&[
                "-n",
                &left.netns,
                "link",
                "add",
                "east",
                "type",
                "veth",
                "peer",
                "name",
                "west",
                "netns",
                &right.netns,
            ])?;
        }
        Ok(())
    }

    /// [`Topology::Mesh`]: a veth pair per link, `m<b>` in node a's
    /// namespace and `m<a>` in node b's (the peer's index: at most 3 bytes
    /// of the 15 an interface name may have).
    fn link_mesh(&self) -> anyhow::Result<()> {
        for &(a, b) in &self.edges {
            // Created directly inside the two namespaces, as the chain's.
            ip(&[
                "-n",
                &self.nodes[a].netns,
                "link",
                "add",
                &format!("m{b}"),
                "type",
                "veth",
                "peer",
                "name",
                &format!("m{a}"),
                "netns",
                &self.nodes[b].netns,
            ])?;
        }
        Ok(())
    }

    /// [`Topology::Sites`]: a switch namespace with a bridge per site, and a
    /// veth from each node interface to a port of its site's bridge.
    fn link_sites(&mut self, tag: &str) -> anyhow::Result<()> {
        let switch = format!("{tag}-sw");
        ip(&["netns", "add", &switch])?;
        self.namespaces.push(switch.clone());
        for bridge in ["bra", "brb"] {
            ip(&["-n", &switch, "link", "add", bridge, "type", "bridge"])?;
            ip(&["-n", &switch, "link", "set", bridge, "up"])?;
        }
        for (i, node) in self.nodes.iter().enumerate() {
            for iface in &node.ifaces {
                let port = format!("{}{i}", iface.name);
                ip(&[
                    "-n",
                    &switch,
                    "link",
                    "add",
                    &port,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &iface.name,
                    "netns",
                    &node.netns,
                ])?;
                let bridge = if iface.segment == 0 { "bra" } else { "brb" };
                ip(&["-n", &switch, "link", "set", &port, "master", bridge])?;
                ip(&["-n", &switch, "link", "set", &port, "up"])?;
                // XDP_TX and XDP_REDIRECT into a veth need NAPI on
                // its peer, the bridge port: GRO is not enough for
                // XDP_TX (a burst of 256 frames or more can wedge
                // the router's veth for good), so an XDP_PASS
                // program, and GRO for the stack's own traffic.
                netns::run(
                    "ip",
                    &[
                        "netns", "exec", &switch, "ethtool", "-K", &port, "gro", "on",
                    ],
                )?;
                self.passthrough
                    .push((None, crate::systems::attach_passthrough(&switch, &port)?));
            }
        }
        Ok(())
    }

    /// Gives every node interface its address, brings it up, turns GRO on
    /// and IP forwarding on.
    fn configure_interfaces(&self) -> anyhow::Result<()> {
        for node in &self.nodes {
            for iface in &node.ifaces {
                let ns = &node.netns;
                ip(&[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{}/{}", iface.addr, iface.prefix),
                    "dev",
                    &iface.name,
                ])?;
                ip(&["-n", ns, "link", "set", "dev", &iface.name, "up"])?;
                // TX checksum offload stays as veth sets it (on): the fast
                // path completes the partial checksums it brings. GRO on:
                // the stack's own sends into a veth whose peer forwards in
                // XDP; XDP_TX and XDP_REDIRECT frames need an XDP program
                // on the receiving end, a router's or the pass-through one
                // (start_relays, the bridge ports above).
                netns::run(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        ns,
                        "ethtool",
                        "-K",
                        &iface.name,
                        "gro",
                        "on",
                    ],
                )?;
                // The XDP fast path resolves next hops with bpf_fib_lookup,
                // which needs forwarding on the ingress interface (this
                // namespace's own sysctl; the host's is untouched).
                for family in ["ipv4", "ipv6"] {
                    let forwarding = format!("net.{family}.conf.{}.forwarding=1", iface.name);
                    netns::run("ip", &["netns", "exec", ns, "sysctl", "-qw", &forwarding])?;
                }
            }
        }
        Ok(())
    }

    /// The generator's node (index 0).
    pub fn generator(&self) -> &Node {
        &self.nodes[0]
    }

    /// Adds an address no node has (host 66 of the /24 of gen's first
    /// interface) to that interface and returns it: the source of traffic
    /// from a non-neighbor. Routers admit data by the sender's IP (a
    /// neighbor's fast path sends from flow ports), so another port of gen's
    /// own address, which belongs to the generator endpoint, would be
    /// admitted. The address goes with gen's namespace.
    pub fn add_stranger_addr(&self) -> anyhow::Result<Ipv4Addr> {
        let iface = self
            .generator()
            .ifaces
            .first()
            .ok_or_else(|| anyhow::anyhow!("gen has no interface"))?;
        let [a, b, c, _] = iface.addr.octets();
        let addr = Ipv4Addr::new(a, b, c, 66);
        if self
            .nodes
            .iter()
            .flat_map(|n| &n.ifaces)
            .any(|i| i.addr == addr)
        {
            anyhow::bail!("{addr} already belongs to a node of the lab");
        }
        netns::ip(&[
            "-n",
            &self.generator().netns,
            "addr",
            "add",
            &format!("{addr}/{}", iface.prefix),
            "dev",
            &iface.name,
        ])?;
        Ok(addr)
    }

    /// The sink's node (the last index).
    pub fn sink(&self) -> &Node {
        &self.nodes[self.nodes.len() - 1]
    }

    /// Index of the sink's node.
    pub fn sink_index(&self) -> usize {
        self.nodes.len() - 1
    }

    /// The routers between gen and sink (indices 1..=N).
    pub fn routers(&self) -> &[Node] {
        &self.nodes[1..self.nodes.len() - 1]
    }

    /// Where a local application reaches its router, inside the router's namespace.
    pub fn router_local_addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT))
    }

    /// The local application's address in the gen and sink namespaces.
    pub fn app_addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], APP_PORT))
    }

    /// Config path of node `i`.
    pub fn config_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.toml", self.nodes[i].role))
    }

    /// Admin socket of node `i`.
    pub fn admin_socket(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.sock", self.nodes[i].role))
    }

    /// Log file of node `i`.
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.log", self.nodes[i].role))
    }

    /// Writes every node's key and config, starts every router (gen and
    /// sink included), and waits until each admin socket answers.
    ///
    /// In the sites topology the seed (r1) starts first, as an operator
    /// would, then the sink, then everybody else: the sink is reachable only
    /// on site B and r1 knows most routers by their site-A address, so the
    /// routers must learn the sink from r1 (their join lookup) rather than
    /// the other way round. In another order discovery still completes, but
    /// at the routers' first bucket refresh (60 s) instead of within seconds.
    pub fn start_routers(&mut self) -> anyhow::Result<()> {
        let first: Vec<usize> = match self.options.topology {
            Topology::Sites => vec![1, self.sink_index()],
            Topology::Chain | Topology::Mesh { .. } => Vec::new(),
        };
        for &i in &first {
            self.start_node(i)?;
            self.wait_up(i)?;
            if i != 1 {
                let joined = crate::wait_until(ROUTER_START_TIMEOUT, || {
                    self.neighbors(i)
                        .is_ok_and(|n| n.contains(&self.nodes[1].id()))
                });
                if !joined {
                    bail!(
                        "{} did not reach the seed r1:\n{}",
                        self.nodes[i].role,
                        self.log_tail(i)
                    );
                }
            }
        }
        for i in (0..self.nodes.len()).filter(|i| !first.contains(i)) {
            self.start_node(i)?;
        }
        for i in 0..self.nodes.len() {
            self.wait_up(i)?;
        }
        Ok(())
    }

    /// Starts the relays' routers only (r1..rN, not gen's and the sink's:
    /// the benchmark's own endpoints take their place) and waits until each
    /// admin socket answers.
    ///
    /// The endpoints' interfaces get a pass-through XDP program (NAPI for the
    /// frames r1 and rN send them with XDP_TX or XDP_REDIRECT), unless they
    /// have one; `remove_passthrough` takes it off for another program.
    pub fn start_relays(&mut self) -> anyhow::Result<()> {
        for i in [0, self.sink_index()] {
            if self.passthrough.iter().any(|(node, _)| *node == Some(i)) {
                continue;
            }
            let node = &self.nodes[i];
            for iface in &node.ifaces {
                let ebpf = crate::systems::attach_passthrough(&node.netns, &iface.name)?;
                self.passthrough.push((Some(i), ebpf));
            }
        }
        for i in 1..self.sink_index() {
            self.start_node(i)?;
        }
        for i in 1..self.sink_index() {
            self.wait_up(i)?;
        }
        Ok(())
    }

    /// Starts (or restarts) the router of node `i`; does not wait for it.
    pub fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        let key = self.dir.join(format!("{}.key", self.nodes[i].role));
        keyfile::write(&key, &self.nodes[i].identity, true)?;
        std::fs::write(self.config_path(i), self.config(i, &key))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.nodes[i].netns])
            .arg(&self.xorlay_bin)
            .arg("run")
            .arg("--config")
            .arg(self.config_path(i))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.xorlay_bin.display()))?;
        self.processes.push(Process { child, index: i });
        Ok(())
    }

    /// Waits until node `i`'s admin socket answers.
    pub fn wait_up(&mut self, i: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + ROUTER_START_TIMEOUT;
        loop {
            if self.stats(i).is_ok() {
                return Ok(());
            }
            if let Some(p) = self.processes.iter_mut().find(|p| p.index == i)
                && let Some(status) = p.child.try_wait()?
            {
                bail!(
                    "{} exited during start-up ({status}):\n{}",
                    self.nodes[i].role,
                    self.log_tail(i)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not come up within {ROUTER_START_TIMEOUT:?}:\n{}",
                    self.nodes[i].role,
                    self.log_tail(i)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The node IDs node `i` must end up with as next hops: every node that
    /// shares a link or segment with it.
    pub fn expected_neighbors(&self, i: usize) -> BTreeSet<NodeId> {
        let mine = self.nodes[i].segments();
        self.nodes
            .iter()
            .enumerate()
            .filter(|(j, n)| *j != i && !n.segments().is_disjoint(&mine))
            .map(|(_, n)| n.id())
            .collect()
    }

    /// Node `i`'s next hops, from its stats.
    pub fn neighbors(&self, i: usize) -> anyhow::Result<BTreeSet<NodeId>> {
        let stats = self.stats(i)?;
        let list = stats["neighbors"]
            .as_array()
            .context("stats have a neighbor list")?;
        list.iter()
            .map(|pair| {
                let id = pair
                    .get(0)
                    .and_then(|v| v.as_str())
                    .context("neighbor ID")?;
                id.parse::<NodeId>().map_err(anyhow::Error::from)
            })
            .collect()
    }

    /// The destinations node `i`'s routing protocol has a route to (its
    /// `xorlay stats` "routes").
    pub fn routes(&self, i: usize) -> anyhow::Result<BTreeSet<NodeId>> {
        let stats = self.stats(i)?;
        let list = stats["routes"]
            .as_array()
            .context("stats have a route list")?;
        list.iter()
            .map(|pair| {
                let id = pair
                    .get(0)
                    .and_then(|v| v.as_str())
                    .context("route destination")?;
                id.parse::<NodeId>().map_err(anyhow::Error::from)
            })
            .collect()
    }

    /// Waits until every running node has all its expected next hops and a
    /// route to every other running node.
    pub fn wait_converged(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let running: BTreeSet<NodeId> = (0..self.nodes.len())
                .filter(|i| self.is_running(*i))
                .map(|i| self.nodes[i].id())
                .collect();
            let missing: Vec<String> = (0..self.nodes.len())
                .filter(|i| self.processes.iter().any(|p| p.index == *i))
                .filter_map(|i| {
                    let expected: BTreeSet<NodeId> = self
                        .expected_neighbors(i)
                        .into_iter()
                        .filter(|id| self.is_running(self.index_of(id)))
                        .collect();
                    let have = self.neighbors(i).unwrap_or_default();
                    let lacking = expected.difference(&have).count();
                    let routes = self.routes(i).unwrap_or_default();
                    let unrouted = running
                        .iter()
                        .filter(|id| **id != self.nodes[i].id() && !routes.contains(id))
                        .filter(|id| self.routed_everywhere(id, &running))
                        .count();
                    (lacking + unrouted > 0).then(|| {
                        format!(
                            "{} lacks {lacking} next hops and {unrouted} routes",
                            self.nodes[i].role
                        )
                    })
                })
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("not converged within {timeout:?}: {}", missing.join(", "));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether every router has a route to `id` once converged: all of
    /// them at level 0, the beacons above it (or all, if none of
    /// `running` is a beacon: compact routing without beacons is a plain
    /// distance vector).
    fn routed_everywhere(&self, id: &NodeId, running: &BTreeSet<NodeId>) -> bool {
        let level = self.options.beacon_level;
        let beacon = |id: &NodeId| beacon_level_of(id) >= level;
        level == 0 || beacon(id) || !running.iter().any(beacon)
    }

    fn index_of(&self, id: &NodeId) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id() == *id)
            .unwrap_or(usize::MAX)
    }

    fn is_running(&self, i: usize) -> bool {
        self.processes.iter().any(|p| p.index == i)
    }

    fn config(&self, i: usize, key: &Path) -> String {
        let node = &self.nodes[i];
        let interfaces: Vec<String> = node
            .ifaces
            .iter()
            .map(|f| format!("\"{}\"", f.name))
            .collect();
        let mesh = matches!(self.options.topology, Topology::Mesh { .. });
        let app = if mesh || i == 0 || i == self.nodes.len() - 1 {
            format!("app = \"{}\"\n", Lab::app_addr())
        } else {
            String::new()
        };
        let relay = i != 0 && i != self.nodes.len() - 1;
        let mut xdp = if relay && !self.options.relay_route_cache {
            "\n[xdp]\nroute_cache = false\n".to_string()
        } else {
            String::new()
        };
        if relay && !self.options.relay_config.is_empty() {
            xdp.push('\n');
            xdp.push_str(&self.options.relay_config);
            xdp.push('\n');
        }
        let mut control = String::new();
        if self.options.beacon_level > 0 {
            control.push_str(&format!("beacon_level = {}\n", self.options.beacon_level));
        }
        let mut neighbors = String::new();
        match self.options.topology {
            Topology::Chain => {
                // Adjacent nodes, as known peers: their address on the shared link.
                for j in [i.wrapping_sub(1), i + 1] {
                    let Some(peer) = self.nodes.get(j) else {
                        continue;
                    };
                    let link = i.min(j);
                    if let Some(addr) = peer.addr_on(link) {
                        neighbors.push_str(&format!(
                            "\n[[neighbor]]\nid = \"{}\"\naddress = \"{addr}\"\n",
                            peer.id()
                        ));
                    }
                }
            }
            Topology::Mesh { .. } => {
                // Each link's peer, as a known peer: its address on the link.
                for segment in node.segments() {
                    for (j, peer) in self.nodes.iter().enumerate() {
                        if j == i {
                            continue;
                        }
                        if let Some(addr) = peer.addr_on(segment) {
                            neighbors.push_str(&format!(
                                "\n[[neighbor]]\nid = \"{}\"\naddress = \"{addr}\"\n",
                                peer.id()
                            ));
                        }
                    }
                }
            }
            Topology::Sites => {
                // One seed for everybody: r1, at its address on a segment this node is on.
                if i != 1 && !self.seedless.contains(&i) {
                    let seed_node = &self.nodes[1];
                    let segment = *node.segments().iter().next().unwrap_or(&0);
                    if let Some(seed) = seed_node.addr_on(segment) {
                        control.push_str(&format!("seeds = [\"{seed}\"]\n"));
                    }
                }
            }
        }
        format!(
            "# xorlay lab node {} ({})\nkey_file = \"{}\"\n\n[underlay]\nlisten = \"[::]:{DEFAULT_PORT}\"\ninterfaces = [{}]\nxdp_mode = \"{}\"\n\n[dataplane]\nworkers = {}\nbuffer_count = 1024\n{app}\n[control]\n{control}peers_file = \"{}\"\n\n[admin]\nsocket = \"{}\"\n{xdp}{neighbors}",
            node.role,
            node.id(),
            key.display(),
            interfaces.join(", "),
            self.options.xdp_mode,
            self.options.workers,
            self.dir.join(format!("{}.peers", node.role)).display(),
            self.admin_socket(i).display(),
        )
    }

    /// The PID of node `i`'s running router (`ip netns exec` execs it, so
    /// this is the `xorlay` process itself).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.processes
            .iter()
            .find(|p| p.index == i)
            .map(|p| p.child.id())
    }

    /// Node `i`'s counters, as JSON.
    pub fn stats(&self, i: usize) -> anyhow::Result<serde_json::Value> {
        let reply = xorlay::io::admin::request(&self.admin_socket(i), "stats")?;
        serde_json::from_str(&reply).context("router stats are not JSON")
    }

    /// `ip -d link show` inside node `i`'s namespace.
    pub fn links(&self, i: usize) -> anyhow::Result<String> {
        ip(&["-n", &self.nodes[i].netns, "-d", "link", "show"])
    }

    /// The last lines of node `i`'s log.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Stops node `i`'s router with SIGTERM (it writes its kept peers) and
    /// waits for it to exit; returns its exit status.
    pub fn stop_node(&mut self, i: usize) -> anyhow::Result<ExitStatus> {
        let Some(pos) = self.processes.iter().position(|p| p.index == i) else {
            bail!("{} is not running", self.nodes[i].role);
        };
        let mut p = self.processes.remove(pos);
        let pid = i32::try_from(p.child.id()).context("pid")?;
        // SAFETY: plain kill(2) on our own child's PID.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let exited = crate::wait_until(ROUTER_STOP_TIMEOUT, || {
            matches!(p.child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = p.child.kill();
        }
        Ok(p.child.wait()?)
    }

    /// Hot restart of node `i` (its config needs `[xdp] pin_dir`): starts a
    /// second `xorlay run` with the same config while the first runs; the
    /// new one takes over the pinned XDP state and the first hands over
    /// and exits on its own. Waits for both, returns the first instance's
    /// exit status.
    pub fn hot_restart(&mut self, i: usize) -> anyhow::Result<ExitStatus> {
        let Some(pos) = self.processes.iter().position(|p| p.index == i) else {
            bail!("{} is not running", self.nodes[i].role);
        };
        let mut old = self.processes.remove(pos);
        self.start_node(i)?;
        let exited = crate::wait_until(ROUTER_START_TIMEOUT + ROUTER_STOP_TIMEOUT, || {
            matches!(old.child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = old.child.kill();
            let _ = old.child.wait();
            bail!(
                "the first instance of {} did not hand over and exit after the second started:\n{}",
                self.nodes[i].role,
                self.log_tail(i)
            );
        }
        let status = old.child.wait()?;
        self.wait_up(i)?;
        Ok(status)
    }

    /// Restarts node `i` with no seeds in its config: it can only rejoin
    /// through the peers it kept on disk. Waits until it is up.
    pub fn restart_from_kept_peers(&mut self, i: usize) -> anyhow::Result<()> {
        let status = self.stop_node(i)?;
        if !status.success() {
            bail!(
                "{} exited with {status} on SIGTERM:\n{}",
                self.nodes[i].role,
                self.log_tail(i)
            );
        }
        self.seedless.insert(i);
        self.start_node(i)?;
        self.wait_up(i)
    }

    /// Kills node `i`'s router at once (SIGKILL: no clean shutdown, as in a
    /// crash or power loss) and waits for it to be gone.
    pub fn kill_node(&mut self, i: usize) -> anyhow::Result<()> {
        let Some(pos) = self.processes.iter().position(|p| p.index == i) else {
            bail!("{} is not running", self.nodes[i].role);
        };
        let mut p = self.processes.remove(pos);
        p.child.kill().context("kill")?;
        p.child.wait().context("wait")?;
        Ok(())
    }

    /// Sends SIGTERM to every router and waits for each to exit (SIGKILL
    /// after a timeout). Returns each node's exit status.
    pub fn stop_routers(&mut self) -> Vec<(usize, std::io::Result<ExitStatus>)> {
        for p in &self.processes {
            if let Ok(pid) = i32::try_from(p.child.id()) {
                // SAFETY: plain kill(2) on our own child's PID.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        let mut results = Vec::new();
        for mut p in self.processes.drain(..) {
            let deadline = Instant::now() + ROUTER_STOP_TIMEOUT;
            let status = loop {
                match p.child.try_wait() {
                    Ok(Some(status)) => break Ok(status),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Ok(None) => {
                        log::warn!(
                            "node {} ignored SIGTERM for {ROUTER_STOP_TIMEOUT:?}; killing it",
                            p.index
                        );
                        let _ = p.child.kill();
                        break p.child.wait();
                    }
                    Err(e) => break Err(e),
                }
            };
            results.push((p.index, status));
        }
        results
    }

    /// Detaches the pass-through XDP programs of node `i` (start_relays).
    pub fn remove_passthrough(&mut self, i: usize) {
        self.passthrough.retain(|(node, _)| *node != Some(i));
    }

    fn teardown(&mut self) {
        self.stop_routers();
        self.passthrough.clear();
        for ns in self.namespaces.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("lab cleanup: {e:#}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.nodes.len() {
                eprintln!("--- {} log ---\n{}", self.nodes[i].role, self.log_tail(i));
            }
            if !self.edges.is_empty() {
                eprintln!("--- mesh links ---\n{}", self.mesh_edges_text());
            }
        }
        self.teardown();
    }
}

/// Chain interfaces: link j joins node j ("east", 198.18.j.1) and node j+1
/// ("west", 198.18.j.2).
fn chain_ifaces(i: usize, count: usize) -> Vec<Iface> {
    let mut ifaces = Vec::new();
    if i > 0 {
        let link = i - 1;
        ifaces.push(Iface {
            name: "west".into(),
            addr: Ipv4Addr::new(198, 18, link as u8, 2),
            prefix: 24,
            segment: link,
        });
    }
    if i + 1 < count {
        ifaces.push(Iface {
            name: "east".into(),
            addr: Ipv4Addr::new(198, 18, i as u8, 1),
            prefix: 24,
            segment: i,
        });
    }
    ifaces
}

/// Sites interfaces: site A is 198.18.0.0/16, site B 198.19.0.0/16; node i
/// is 198.18.i.1 / 198.19.i.1, each in a /24 of its own (so the routing
/// table's per-subnet limits see distinct subnets, as on the internet).
fn sites_ifaces(i: usize, count: usize) -> Vec<Iface> {
    let on_a = i + 1 < count; // everyone but the sink
    let on_b = i > 0; // everyone but gen
    let mut ifaces = Vec::new();
    if on_a {
        ifaces.push(Iface {
            name: "sitea".into(),
            addr: Ipv4Addr::new(198, 18, i as u8, 1),
            prefix: 16,
            segment: 0,
        });
    }
    if on_b {
        ifaces.push(Iface {
            name: "siteb".into(),
            addr: Ipv4Addr::new(198, 19, i as u8, 1),
            prefix: 16,
            segment: 1,
        });
    }
    ifaces
}

/// Mesh interfaces: link e (nodes a < b) is 198.18.0.0/15's /30 at
/// `198.18.0.0 + 256 e`, a at .1 ("m<b>"), b at .2 ("m<a>"). Each link has a
/// /24 of its own: the routers' Kademlia tables admit few peers per /24
/// (`control.subnet_bucket_max`), and a node's links are all its peers.
fn mesh_ifaces(i: usize, edges: &[(usize, usize)]) -> Vec<Iface> {
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    edges
        .iter()
        .enumerate()
        .filter_map(|(e, &(a, b))| {
            let (peer, host) = if a == i {
                (b, 1)
            } else if b == i {
                (a, 2)
            } else {
                return None;
            };
            // e < MESH_EDGES_MAX (512): stays inside 198.18.0.0/15.
            let net = base + (e as u32) * 256;
            Some(Iface {
                name: format!("m{peer}"),
                addr: Ipv4Addr::from(net + host),
                prefix: 30,
                segment: e,
            })
        })
        .collect()
}

/// Most links of a mesh: one /24 each in 198.18.0.0/15.
const MESH_EDGES_MAX: usize = 512;

/// A random connected graph on `count` nodes, from `seed`: a random
/// spanning tree (each node in a random order joins a random earlier node
/// with room), then the other pairs in a random order, each joined while
/// both ends are below their degree target (random in
/// `degree.0..=degree.1`). Returns the links, lower index first.
fn random_mesh(
    count: usize,
    degree: (usize, usize),
    seed: u64,
) -> anyhow::Result<Vec<(usize, usize)>> {
    let (low, high) = degree;
    if low < 2 || low > high || high > MESH_DEGREE_MAX || high + 1 >= count {
        bail!(
            "a mesh's degree bounds are 2 <= low <= high <= {MESH_DEGREE_MAX} and high < nodes - 1 \
             (never a full mesh): not {low}..={high} with {count} nodes"
        );
    }
    let mut rng = SplitMix64(seed);
    let target: Vec<usize> = (0..count)
        .map(|_| low + rng.below(high - low + 1))
        .collect();
    let mut deg = vec![0usize; count];
    let mut edges = BTreeSet::new();
    let mut order: Vec<usize> = (0..count).collect();
    rng.shuffle(&mut order);
    for k in 1..count {
        // Every target is at least 2, so the k nodes placed so far have
        // sum(target) - 2 (k - 1) >= 2 free slots: someone has room.
        let room: Vec<usize> = order[..k]
            .iter()
            .copied()
            .filter(|&j| deg[j] < target[j])
            .collect();
        let (a, b) = (order[k], room[rng.below(room.len())]);
        edges.insert((a.min(b), a.max(b)));
        deg[a] += 1;
        deg[b] += 1;
    }
    let mut pairs: Vec<(usize, usize)> = (0..count)
        .flat_map(|a| (a + 1..count).map(move |b| (a, b)))
        .filter(|p| !edges.contains(p))
        .collect();
    rng.shuffle(&mut pairs);
    for (a, b) in pairs {
        if deg[a] < target[a] && deg[b] < target[b] {
            edges.insert((a, b));
            deg[a] += 1;
            deg[b] += 1;
        }
    }
    if edges.len() > MESH_EDGES_MAX {
        bail!("{} links: more than {MESH_EDGES_MAX}", edges.len());
    }
    Ok(edges.into_iter().collect())
}

/// A small PRNG for the mesh's shape (splitmix64); the seed comes from the OS.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough below `n` (> 0) for a test's graph.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// Random identities for gen, r1..rN, sink: the routers route on any
/// topology whatever their IDs (docs/routing.md), so the lab picks none.
fn random_identities(routers: usize) -> anyhow::Result<Vec<Identity>> {
    (0..routers + 2)
        .map(|_| {
            let mut seed = [0u8; 32];
            getrandom::getrandom(&mut seed)
                .map_err(|e| anyhow::anyhow!("the OS gave no random bytes: {e}"))?;
            Ok(Identity::from_seed(&seed))
        })
        .collect()
}

fn require_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the lab creates network namespaces and attaches XDP: run it as root (e.g. `sudo make demo`)"
        );
    }
    Ok(())
}

/// The `xorlay` binary: $XORLAY_BIN, or beside this executable (target/*/),
/// or one level up (target/*/deps/ for tests).
pub fn find_xorlay_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("XORLAY_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("xorlay");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "cannot find the `xorlay` binary beside {}: build it first (`cargo build --workspace --bins`) or set XORLAY_BIN",
        exe.display()
    )
}

/// Removes lab namespaces whose owning process no longer exists (left by a
/// run that was killed). Namespaces of live labs are left alone.
pub fn clean_stale() -> Vec<String> {
    let mut removed = Vec::new();
    for ns in netns::list() {
        let Some(rest) = ns.strip_prefix(PREFIX) else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Ok(pid) = digits.parse::<u32>() else {
            continue;
        };
        if !rest[digits.len()..].starts_with('x') || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if ip(&["netns", "del", &ns]).is_ok() {
            removed.push(ns);
        }
    }
    if !removed.is_empty() {
        eprintln!(
            "lab: removed {} namespace(s) left by an earlier run: {}",
            removed.len(),
            removed.join(" ")
        );
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_random_and_distinct() {
        let ids = random_identities(4).expect("OS randomness");
        assert_eq!(ids.len(), 6);
        let mut node_ids: Vec<_> = ids.iter().map(|i| i.node_id()).collect();
        node_ids.sort();
        node_ids.dedup();
        assert_eq!(node_ids.len(), 6);
    }

    /// Node sets reachable from node 0 over `edges`.
    fn reachable(count: usize, edges: &[(usize, usize)]) -> BTreeSet<usize> {
        let mut seen = BTreeSet::from([0]);
        let mut stack = vec![0];
        while let Some(n) = stack.pop() {
            for &(a, b) in edges {
                let next = if a == n {
                    b
                } else if b == n {
                    a
                } else {
                    continue;
                };
                if next < count && seen.insert(next) {
                    stack.push(next);
                }
            }
        }
        seen
    }

    #[test]
    fn meshes_are_connected_capped_and_never_full() {
        let mut seed = [0u8; 8];
        getrandom::getrandom(&mut seed).expect("OS randomness");
        let first = u64::from_le_bytes(seed);
        for (count, degree) in [(20, (2, 4)), (5, (2, 3)), (64, (2, 8)), (10, (3, 3))] {
            for round in 0..50u64 {
                let seed = first.wrapping_add(round);
                let edges = random_mesh(count, degree, seed).expect("valid bounds");
                let why = format!("{count} nodes, {degree:?}, seed {seed}: {edges:?}");
                assert_eq!(reachable(count, &edges).len(), count, "{why}");
                let mut deg = vec![0; count];
                let mut unique = BTreeSet::new();
                for &(a, b) in &edges {
                    assert!(a < b && b < count, "{why}");
                    assert!(unique.insert((a, b)), "{why}");
                    deg[a] += 1;
                    deg[b] += 1;
                }
                assert!(deg.iter().all(|&d| d >= 1 && d <= degree.1), "{why}");
                assert!(edges.len() < count * (count - 1) / 2, "{why}");
                // Addresses: one /30 per link, inside 198.18.0.0/15, the
                // two ends on one link and nobody else.
                let ifaces: Vec<Vec<Iface>> = (0..count).map(|i| mesh_ifaces(i, &edges)).collect();
                for (e, &(a, b)) in edges.iter().enumerate() {
                    let fa = ifaces[a].iter().find(|f| f.segment == e).expect("a on e");
                    let fb = ifaces[b].iter().find(|f| f.segment == e).expect("b on e");
                    assert_eq!(
                        (fa.name.clone(), fb.name.clone()),
                        (format!("m{b}"), format!("m{a}"))
                    );
                    assert_eq!(u32::from(fa.addr) + 1, u32::from(fb.addr));
                    assert_eq!(u32::from(fa.addr) & !3, u32::from(fb.addr) & !3);
                    assert_eq!(fa.addr.octets()[0..2], [198, 18 + (e / 256) as u8]);
                }
            }
        }
        // Bounds that would allow a full mesh, or a tree without room.
        assert!(random_mesh(5, (2, 4), 1).is_err());
        assert!(random_mesh(20, (1, 4), 1).is_err());
        assert!(random_mesh(20, (4, 3), 1).is_err());
        assert!(random_mesh(20, (2, MESH_DEGREE_MAX + 1), 1).is_err());
    }

    #[test]
    fn chain_and_sites_addressing() {
        let chain: Vec<Vec<Iface>> = (0..4).map(|i| chain_ifaces(i, 4)).collect();
        assert_eq!(chain[0].len(), 1);
        assert_eq!(chain[1].len(), 2);
        assert_eq!(chain[3].len(), 1);
        // Link 1 joins node 1's east and node 2's west.
        assert_eq!(chain[1][1].addr, Ipv4Addr::new(198, 18, 1, 1));
        assert_eq!(chain[2][0].addr, Ipv4Addr::new(198, 18, 1, 2));
        let sites: Vec<Vec<Iface>> = (0..4).map(|i| sites_ifaces(i, 4)).collect();
        assert_eq!(
            sites[0].iter().map(|f| f.segment).collect::<Vec<_>>(),
            vec![0]
        );
        assert_eq!(
            sites[1].iter().map(|f| f.segment).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert_eq!(
            sites[3].iter().map(|f| f.segment).collect::<Vec<_>>(),
            vec![1]
        );
        for ifaces in chain.iter().chain(sites.iter()) {
            for f in ifaces {
                let o = f.addr.octets();
                assert!(
                    o[0] == 198 && (o[1] == 18 || o[1] == 19),
                    "{} outside 198.18.0.0/15",
                    f.addr
                );
            }
        }
    }
}
