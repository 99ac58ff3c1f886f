//! One router process: identity, next-hop table, XDP, workers and the admin
//! socket, started in that order and stopped in reverse.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::Receiver;
use serde::Serialize;

use crate::config::{Config, Endpoint, SettingError};
use crate::core::NodeId;
use crate::core::identity::Identity;
use crate::core::identity::puzzle_bits;
use crate::core::node::{Node, NodeConfig, NodeCounters};
use crate::core::shed::{ShedConfig, Shedder};
use crate::core::topology::{Topology, canonical};
use crate::io::admin::{AdminError, AdminServer};
use crate::io::backlog::{BacklogMap, CreditState};
use crate::io::bpf::{
    BpfError, LoadOptions, NeighborMap, PinnedStart, RouteCache, ShedBudget, XdpCounters, XdpRouter,
};
use crate::io::control::{
    CONTROL_QUEUE_DEPTH, ControlIo, ControlPlane, NamedPeer, ShellCounters, WarmStart,
};
use crate::io::holder;
use crate::io::keyfile::{self, KeyError};
use crate::io::stats::{WorkerCounters, WorkerStats};
use crate::io::steer::Steering;
use crate::io::topology::{SharedTable, share};
use crate::io::txwatch::{TxLoss, TxLossMonitor};
use crate::io::worker::{Upcall, Worker, WorkerConfig, WorkerError, WorkerLinks};

/// Longest the control loop waits for input before it serves the admin
/// socket and checks for shutdown.
const CONTROL_TICK: Duration = Duration::from_millis(20);
/// How often a router with pinned XDP state checks whether a newer instance
/// took it over: before every control step, so it stops writing the shared
/// maps within a tick of the takeover. Its sessions die `dead_after_ms`
/// later (the peers moved to the new instance), and a publish of that by
/// the old instance would remove live peers from the new one's allowlist
/// (a check once a second lost traffic that way, depending on its phase).
/// The check is an owner-record read: a few syscalls.
const TAKEOVER_CHECK_INTERVAL: Duration = CONTROL_TICK;
/// How long an instance whose XDP state was taken over keeps forwarding
/// what still reaches its socket before it exits on its own.
const HANDOVER_DRAIN: Duration = Duration::from_secs(1);

/// Why [`Router::run_until`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// The shutdown flag was set (SIGTERM, SIGINT).
    Shutdown,
    /// A newer instance took over the pinned XDP state (hot restart); this
    /// one has handed over and should exit.
    TakenOver,
}

/// Why the router could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The key file.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// XDP load or attach.
    #[error(transparent)]
    Bpf(#[from] BpfError),
    /// A worker.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// The admin socket.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// This node's own key fails the configured puzzle.
    #[error(
        "this node's key solves the puzzle at {bits} bits but control.difficulty is {difficulty}; make a key with `xorlay keygen --difficulty {difficulty} --out FILE`"
    )]
    Puzzle {
        /// Leading zero bits of this node's puzzle hash.
        bits: u32,
        /// Required bits.
        difficulty: u32,
    },
    /// The overlay port is in use (another router, or another program).
    #[error("{0}")]
    PortInUse(String),
    /// The listen address cannot be bound here.
    #[error(
        "cannot bind underlay.listen = {listen}: {source}; use an address of this host, or \
         \"[::]:{port}\" for all of them"
    )]
    Listen {
        /// The address.
        listen: std::net::SocketAddr,
        /// Its port.
        port: u16,
        /// The OS error.
        source: std::io::Error,
    },
    /// No OS randomness for session keys.
    #[error("cannot get random bytes from the OS for session keys: {0}")]
    Random(String),
}

/// What `xorlay stats` prints.
#[derive(Debug, Clone, Serialize)]
pub struct RouterStats {
    /// This node.
    pub node_id: NodeId,
    /// Next hops in the published table: node ID and underlay address.
    pub neighbors: Vec<(NodeId, std::net::SocketAddr)>,
    /// The routing protocol's routes in the published table: destination
    /// and next hop, sorted (docs/routing.md).
    pub routes: Vec<(NodeId, NodeId)>,
    /// Peers with an authenticated session (their data is accepted).
    pub session_peers: usize,
    /// The control plane: sessions, Kademlia and the glue.
    pub control: Option<NodeCounters>,
    /// The control plane's shell: packets sent, publishes.
    pub control_io: Option<ShellCounters>,
    /// Whether datagrams are steered across workers by overlay flow.
    pub steering: bool,
    /// Interfaces with XDP and the mode used.
    pub xdp_attached: Vec<(String, &'static str)>,
    /// XDP counters summed over CPUs (absent without XDP). `fwd_tx` and
    /// `fwd_redirect` count verdicts, not frames the driver accepted.
    pub xdp: Option<XdpCounters>,
    /// Transmit losses of each interface with XDP, as last read (every
    /// second): `tx_dropped` and the driver's XDP transmit errors; growth is
    /// logged as a warning.
    pub tx_loss: Vec<TxLoss>,
    /// The workers' shedding budget in XDP, packets per second (absent:
    /// none in force).
    pub shed_budget_pps: Option<u32>,
    /// Each worker's credits in XDP, in worker order (empty: shedding by
    /// queue is off).
    pub shed_credits: Vec<CreditState>,
    /// Sum over workers.
    pub total: WorkerCounters,
    /// Each worker.
    pub workers: Vec<WorkerCounters>,
}

/// A running router.
#[derive(Debug)]
pub struct Router {
    identity: Identity,
    table: SharedTable,
    control: Option<ControlPlane>,
    /// Spreads datagrams across the workers by overlay flow.
    steering: Option<Steering>,
    stop: Arc<AtomicBool>,
    workers: Vec<(Worker, Arc<WorkerStats>)>,
    xdp: Option<XdpRouter>,
    admin: Option<AdminServer>,
    /// Load shedding: the policy and the XDP map it writes.
    shed: Option<(Shedder, ShedBudget)>,
    /// Load shedding by queue: the workers' credits in XDP.
    backlog: Option<BacklogMap>,
    /// Transmit losses of the interfaces with XDP.
    tx_watch: Option<TxLossMonitor>,
}

impl Router {
    /// Starts every plane. On error, whatever was started is stopped again
    /// (workers joined, XDP detached) before returning.
    pub fn start(config: &Config) -> Result<Router, RouterError> {
        let (identity, seed) = own_identity(config)?;
        let mut router = Router {
            identity: identity.clone(),
            table: share(Topology::empty(identity.node_id())),
            control: None,
            steering: None,
            stop: Arc::new(AtomicBool::new(false)),
            workers: Vec::new(),
            xdp: None,
            admin: None,
            shed: None,
            backlog: None,
            tx_watch: None,
        };
        // From here on, an early return drops `router`, which stops what runs.
        let xdp = router.start_xdp(config, &identity)?;
        let warm_start = warm_start(config, &xdp);
        let control_rx = router.start_workers(config, xdp.route_cache.is_none())?;
        let socket = router.control_socket(config)?;
        let (node, named) = start_node(config, identity, seed);
        let io = ControlIo {
            packets: control_rx,
            socket,
            listen: config.listen,
            shared: router.table.clone(),
            xdp_neighbors: xdp.neighbors,
            route_cache: xdp.route_cache,
            warm_start,
            named,
            resolve_interval: node_config(config).kad.rebootstrap_interval,
        };
        router.control = Some(ControlPlane::start(
            node,
            io,
            config.control.peers_file.clone(),
        ));
        router.start_admin(config, xdp.pinned_start.as_ref())?;
        log::info!(
            "xorlay {} up: {} worker(s) on {}, {} seed(s), {} known peer(s), XDP on {:?}",
            router.identity.node_id(),
            router.workers.len(),
            config.listen,
            config.control.seeds.len(),
            config.neighbors.len(),
            router
                .xdp
                .as_ref()
                .map(|x| x.attached())
                .unwrap_or_default(),
        );
        Ok(router)
    }

    /// Loads and attaches XDP on the configured interfaces (taking pinned
    /// state over where `[xdp] pin_dir` says), and takes the maps the other
    /// planes write: the route cache, the neighbor allowlist, the shedding
    /// budget and credits.
    fn start_xdp(&mut self, config: &Config, identity: &Identity) -> Result<XdpStart, RouterError> {
        if !config.interfaces.is_empty() {
            self.xdp = Some(match &config.xdp.pin_dir {
                Some(pin_dir) => XdpRouter::attach_pinned(
                    &config.interfaces,
                    config.listen.port(),
                    config.xdp_mode,
                    LoadOptions::default(),
                    pin_dir,
                )?,
                None => {
                    XdpRouter::attach(&config.interfaces, config.listen.port(), config.xdp_mode)?
                }
            });
        } else {
            log::warn!(
                "no [underlay] interfaces configured: XDP is off, every packet takes the userspace path"
            );
        }
        self.tx_watch = self.xdp.as_ref().map(|x| {
            let names: Vec<String> = x.attached().into_iter().map(|(name, _)| name).collect();
            TxLossMonitor::new(&names)
        });
        let pinned_start = self.xdp.as_ref().and_then(|x| x.pinned_start().cloned());
        let route_cache = match self.xdp.as_mut() {
            Some(xdp) => prepare_route_cache(xdp, config, identity)?,
            None => None,
        };
        let neighbors = self.xdp.as_mut().and_then(XdpRouter::take_neighbor_map);
        if config.xdp.shed {
            // Two ways, both on: the workers' credits keep their socket
            // queues from overflowing; the budget is the fallback where the
            // credits cannot work (no mapping, workers not steered) and sets
            // in only once the sockets drop.
            self.shed = self
                .xdp
                .as_mut()
                .and_then(XdpRouter::take_shed_budget)
                .map(|map| (Shedder::new(ShedConfig::default()), map));
            self.backlog = self.xdp.as_mut().and_then(XdpRouter::take_backlog);
        }
        Ok(XdpStart {
            pinned_start,
            route_cache,
            neighbors,
        })
    }

    /// Spawns the workers (without a route cache to fill, they install no
    /// routes), steers them by overlay flow and tells XDP how many there
    /// are; returns the receiving end of their upcalls.
    fn start_workers(
        &mut self,
        config: &Config,
        no_route_cache: bool,
    ) -> Result<Receiver<Upcall>, RouterError> {
        let (control_tx, control_rx) = crossbeam_channel::bounded(CONTROL_QUEUE_DEPTH);
        let mut worker_config = WorkerConfig::new(config.listen, config.dataplane.clone());
        if no_route_cache {
            worker_config.dataplane.installs_per_sec = 0; // no route cache to fill
        }
        for index in 0..config.worker_count() {
            let stats = Arc::new(WorkerStats::default());
            let links = WorkerLinks {
                table: self.table.clone(),
                stats: stats.clone(),
                stop: self.stop.clone(),
                upcalls: Some(control_tx.clone()),
                credits: self.backlog.as_ref().and_then(|map| map.credits(index)),
            };
            let worker = Worker::spawn(index, &worker_config, links)?;
            self.workers.push((worker, stats));
        }
        drop(control_tx); // the workers hold the senders
        self.steer_workers();
        Ok(control_rx)
    }

    /// Attaches the steering program over several workers' sockets and
    /// sets the workers XDP sheds for by queue (none when not steered).
    fn steer_workers(&mut self) {
        if self.workers.len() > 1 {
            let sockets: Vec<&socket2::Socket> =
                self.workers.iter().map(|(w, _)| w.socket()).collect();
            match Steering::attach(&sockets) {
                Ok(steering) => self.steering = Some(steering),
                Err(e) => log::warn!("{e}"),
            }
        }
        if let Some(backlog) = &self.backlog {
            // XDP finds a packet's worker as the steering program picks it;
            // under the kernel's own choice it cannot, so it sheds nothing.
            let workers = self.workers.len();
            let workers = if workers == 1 || self.steering.is_some() {
                workers
            } else {
                log::warn!(
                    "load shedding by queue is off: the workers are not steered by overlay flow"
                );
                0
            };
            if let Err(e) = backlog.set_workers(workers) {
                log::warn!("load shedding by queue is off: {e}");
            }
        }
    }

    /// A handle on the first worker's socket for the control plane to send
    /// from.
    fn control_socket(&self, config: &Config) -> Result<socket2::Socket, RouterError> {
        match self.workers.first() {
            Some((worker, _)) => worker.socket().try_clone().map_err(|source| {
                RouterError::Worker(WorkerError::Socket {
                    listen: config.listen,
                    step: "dup",
                    source,
                })
            }),
            None => Err(RouterError::Worker(WorkerError::Config(SettingError {
                key: "workers",
                message: "no worker started".into(),
            }))),
        }
    }

    /// Binds the admin socket (taking its path over in a hot restart) and
    /// claims the pinned XDP state. Last: a reachable admin socket means
    /// the router is fully up.
    fn start_admin(
        &mut self,
        config: &Config,
        pinned_start: Option<&PinnedStart>,
    ) -> Result<(), RouterError> {
        // In a hot restart the old instance still serves it: the new one
        // takes the path over (the old one then leaves it alone at exit).
        if let Some(PinnedStart::HotRestart { pid }) = pinned_start
            && config.admin_socket.exists()
        {
            log::info!(
                "hot restart: taking over the admin socket {} from pid {pid}",
                config.admin_socket.display()
            );
            if let Err(e) = std::fs::remove_file(&config.admin_socket) {
                log::warn!("removing {}: {e}", config.admin_socket.display());
            }
        }
        self.admin = Some(AdminServer::bind(&config.admin_socket)?);
        // Only a fully started router owns the pinned XDP state: a takeover
        // that fails before here leaves it to the running instance.
        if let Some(xdp) = self.xdp.as_mut() {
            xdp.claim_pins()?;
        }
        Ok(())
    }

    /// This node's ID.
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// What `xorlay route <node-id>` prints: the next hop the workers' table
    /// gives `id`, which state it comes from and why.
    pub fn explain_route(&self, id: &str) -> serde_json::Value {
        let dst: NodeId = match id.parse() {
            Ok(dst) => dst,
            Err(e) => {
                return serde_json::json!({
                    "error": format!("{id:?} is not a node ID ({e}): give 64 hex digits")
                });
            }
        };
        let topology = self.table.load();
        let table = &topology.table;
        let routing = self.control.as_ref().map(|c| c.node().routing());
        let state = routing.and_then(|r| r.route(&dst)).map(|(next, metric, beacon)| {
            serde_json::json!({ "next_hop": next, "metric": metric, "beacon": beacon })
        });
        let addr = |id: &NodeId| {
            table
                .iter()
                .find(|(n, _)| *n == id)
                .and_then(|(_, hop)| hop.as_socket().map(canonical))
        };
        let (decision, next_hop, why) = if dst == *table.local() {
            ("local", None, "the destination is this node".to_string())
        } else if let Some((next, _)) = table.exact(&dst) {
            (
                "forward",
                Some(*next),
                "the routing protocol's route (shortest known path, loop-free)".to_string(),
            )
        } else if let Some((via, (next, _))) = table
            .via_of(&dst)
            .and_then(|via| table.exact(via).map(|route| (via, route)))
        {
            (
                "forward_via",
                Some(*next),
                format!(
                    "no route to it (outside this router's cluster): toward its beacon {via}, \
                     as the location service answered; packets from here carry that beacon"
                ),
            )
        } else if table.compact() {
            (
                "no_route",
                None,
                format!(
                    "no route to it among {} routes and its beacon is not known here: a \
                     packet for it from the local application starts a lookup (location \
                     service), and is dropped as drop_no_route until the answer comes",
                    table.route_count()
                ),
            )
        } else {
            match crate::core::forward::route(table, &dst) {
                crate::core::forward::Route::Next { next_hop, .. } => (
                    "forward",
                    Some(*next_hop),
                    "no route to it: greedy fallback to the neighbor XOR-closest to it, \
                     which is closer to it than this node"
                        .to_string(),
                ),
                _ => (
                    "no_route",
                    None,
                    format!(
                        "no route to it among {} routes, and no neighbor is XOR-closer to it \
                         than this node: packets for it are dropped as drop_no_route",
                        table.route_count()
                    ),
                ),
            }
        };
        serde_json::json!({
            "destination": dst,
            "decision": decision,
            "next_hop": next_hop,
            "next_hop_addr": next_hop.as_ref().and_then(addr),
            "next_hop_rtt_us": next_hop
                .as_ref()
                .and_then(|n| routing.and_then(|r| r.rtt(n)))
                .map(|rtt| rtt.as_micros() as u64),
            "why": why,
            "routing_state": state,
            "routes": table.route_count(),
            "neighbors": table.len(),
            "beacon_level": routing.map(|r| r.level()),
            "nearest_beacon": routing.and_then(|r| r.nearest_beacon()),
            "destination_beacon": table.via_of(&dst),
        })
    }

    /// Current counters of every plane.
    pub fn stats(&self) -> RouterStats {
        let workers: Vec<WorkerCounters> = self.workers.iter().map(|(_, s)| s.snapshot()).collect();
        let mut total = WorkerCounters::default();
        for w in &workers {
            total += *w;
        }
        let xdp = self.xdp.as_ref().and_then(|x| match x.counters() {
            Ok(c) => Some(c),
            Err(e) => {
                log::warn!("reading XDP counters: {e}");
                None
            }
        });
        let topology = self.table.load();
        RouterStats {
            node_id: self.identity.node_id(),
            neighbors: topology
                .table
                .iter()
                .filter_map(|(id, hop)| hop.as_socket().map(|a| (*id, canonical(a))))
                .collect(),
            routes: {
                let mut routes: Vec<(NodeId, NodeId)> =
                    topology.table.routes().map(|(d, n)| (*d, *n)).collect();
                routes.sort_unstable();
                routes
            },
            session_peers: topology.allowed_len().unwrap_or(0),
            control: self.control.as_ref().map(|c| c.node().counters()),
            steering: self.steering.is_some(),
            control_io: self.control.as_ref().map(|c| c.counters()),
            xdp_attached: self.xdp.as_ref().map(|x| x.attached()).unwrap_or_default(),
            xdp,
            tx_loss: self
                .tx_watch
                .as_ref()
                .map_or_else(Vec::new, TxLossMonitor::figures),
            shed_credits: self
                .backlog
                .as_ref()
                .filter(|map| map.workers() > 0)
                .map_or_else(Vec::new, |map| {
                    (0..self.workers.len())
                        .filter_map(|i| map.peek(i))
                        .collect()
                }),
            shed_budget_pps: self
                .shed
                .as_ref()
                .and_then(|(s, _)| s.budget())
                .map(|b| b.pps),
            total,
            workers,
        }
    }

    /// Feeds the shedding policy the workers' socket drops and intake, and
    /// writes a changed budget into XDP.
    fn shed_tick(&mut self) {
        let Some((shedder, map)) = &mut self.shed else {
            return;
        };
        let now = std::time::Instant::now();
        if !shedder.due(now) {
            return;
        }
        let drops: u64 = self
            .workers
            .iter()
            .map(|(w, _)| socket_drops(w.socket()))
            .sum();
        let taken: u64 = self
            .workers
            .iter()
            .map(|(_, s)| s.snapshot().rx_packets)
            .sum();
        let shed = self
            .xdp
            .as_ref()
            .and_then(|x| x.counters().ok())
            .map_or(0, |c| c.drop_shed);
        let was = shedder.budget();
        let Some(budget) = shedder.observe(now, drops, taken, shed) else {
            return;
        };
        match (was, budget) {
            (None, Some(b)) => log::info!(
                "workers overloaded (their sockets drop): shedding in XDP beyond {} packets/s",
                b.pps
            ),
            (Some(_), None) => log::info!("load fits the workers again: shedding lifted"),
            (_, Some(b)) => log::debug!("shedding budget {} packets/s", b.pps),
            (None, None) => {}
        }
        if let Err(e) = map.set(budget) {
            log::warn!("writing the shedding budget: {e}");
        }
    }

    /// The control loop: runs the control plane and serves the admin socket
    /// until `shutdown` is set, or until a newer instance has taken over the
    /// pinned XDP state (hot restart) and `HANDOVER_DRAIN` has passed:
    /// then this instance has nothing left to do and returns
    /// [`RunEnd::TakenOver`] (its sessions would only compete with the new
    /// instance's for the same neighbors).
    pub fn run_until(&mut self, shutdown: &AtomicBool) -> RunEnd {
        let mut next_takeover_check = std::time::Instant::now();
        let mut taken_over = false;
        let mut exit_at = None;
        loop {
            if shutdown.load(Ordering::Relaxed) {
                return RunEnd::Shutdown;
            }
            if exit_at.is_some_and(|at| std::time::Instant::now() >= at) {
                return RunEnd::TakenOver;
            }
            // A newer instance that took over the pinned XDP state is its
            // only writer from then on: checked before the step that could
            // publish.
            let now = std::time::Instant::now();
            if !taken_over && now >= next_takeover_check {
                next_takeover_check = now + TAKEOVER_CHECK_INTERVAL;
                if self.xdp.as_ref().is_some_and(XdpRouter::taken_over) {
                    taken_over = true;
                    if let Some(control) = &mut self.control {
                        control.release_xdp();
                    }
                    log::info!(
                        "handing over to the newer instance: exiting in {} ms",
                        HANDOVER_DRAIN.as_millis()
                    );
                    exit_at = Some(now + HANDOVER_DRAIN);
                }
            }
            match &mut self.control {
                Some(control) => control.step(CONTROL_TICK),
                None => std::thread::sleep(CONTROL_TICK),
            }
            self.shed_tick();
            if let Some(watch) = &mut self.tx_watch {
                watch.tick(std::time::Instant::now());
            }
            if let Some(admin) = &self.admin {
                admin.serve_for(Duration::ZERO, |request| match request {
                    // Read at request time: counters are never older than the last batch.
                    "stats" => serde_json::to_string(&self.stats())
                        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")),
                    other => match other.strip_prefix("route ") {
                        Some(id) => self.explain_route(id.trim()).to_string(),
                        None => serde_json::json!({
                            "error": format!("unknown request {other:?}; known: stats, route <node-id>")
                        })
                        .to_string(),
                    },
                });
            }
        }
    }

    /// Stops the workers, detaches XDP and removes the admin socket.
    pub fn shutdown(mut self) -> Result<(), RouterError> {
        self.stop_all()
    }

    fn stop_all(&mut self) -> Result<(), RouterError> {
        let taken_over = self.xdp.as_ref().is_some_and(XdpRouter::taken_over);
        if let Some(admin) = self.admin.take()
            && taken_over
        {
            // The admin socket's path belongs to the instance that took
            // over: dropping the server would unlink it. The listener closes
            // with this process, which is exiting.
            std::mem::forget(admin);
        }
        if let Some(mut control) = self.control.take() {
            control.persist();
            if !taken_over {
                // A hot restart's successor keeps the node's place; a
                // router that really stops tells its neighbors first.
                control.leave();
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        let mut first_error = None;
        for (worker, _) in self.workers.drain(..) {
            if let Err(e) = worker.join() {
                log::error!("worker: {e}");
                first_error.get_or_insert(RouterError::Worker(e));
            }
        }
        if let Some(xdp) = self.xdp.take() {
            xdp.detach();
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Err(e) = self.stop_all() {
            log::error!("stopping router: {e}");
        }
    }
}

/// Refuses an overlay port another process already has: the workers' sockets
/// use SO_REUSEPORT, so a second router on the port would otherwise start
/// and silently split the traffic with the first. A probe socket without
/// SO_REUSEPORT is bound to `underlay.listen`: it fails with EADDRINUSE
/// whenever any socket has that port. The holders are named from /proc
/// ([`holder::udp_port_holders`]). The one sharing allowed is a hot restart:
/// `[xdp] pin_dir` is set and its live owner holds the port.
pub fn check_port(config: &Config) -> Result<(), RouterError> {
    let listen = config.listen;
    let error = match std::net::UdpSocket::bind(listen) {
        Ok(_probe) => return Ok(()),
        Err(e) => e,
    };
    if error.raw_os_error() != Some(libc::EADDRINUSE) {
        return Err(RouterError::Listen {
            listen,
            port: listen.port(),
            source: error,
        });
    }
    // A hot restart: the owner hands over. Its descriptors alone are read
    // (not every process's), so the takeover is not slowed down.
    if let Some(pin_dir) = &config.xdp.pin_dir
        && !config.interfaces.is_empty()
        && let Some(owner) = crate::io::bpf::pinned_owner(pin_dir)
        && holder::pid_holds_udp_port(owner, listen.port())
    {
        return Ok(());
    }
    let holders = holder::udp_port_holders(listen.port());
    Err(RouterError::PortInUse(port_in_use_message(
        listen, &holders,
    )))
}

/// What to say when `listen`'s port is held by `holders` (maybe none seen).
pub fn port_in_use_message(listen: std::net::SocketAddr, holders: &[holder::Holder]) -> String {
    let port = listen.port();
    if let Some(router) = holders.iter().find(|h| h.is_xorlay()) {
        return format!(
            "UDP port {port} (underlay.listen = {listen}) is in use by another xorlay router, {}; \
             a second router on the port would silently split its traffic: stop that one first \
             (`kill {}`, or `systemctl stop xorlay`), or give this one another port; to replace \
             a running router without losing packets, give both the same [xdp] pin_dir (a hot \
             restart)",
            holder::describe(holders),
            router.pid
        );
    }
    if holders.is_empty() {
        return format!(
            "UDP port {port} (underlay.listen = {listen}) is in use by another socket (`ss -ulpn \
             'sport = :{port}'` names its process): stop it, or set another port in \
             underlay.listen"
        );
    }
    format!(
        "UDP port {port} (underlay.listen = {listen}) is in use by {}: stop it, or set another \
         port in underlay.listen",
        holder::describe(holders)
    )
}

/// The control plane's settings from the config.
pub fn node_config(config: &Config) -> NodeConfig {
    let c = &config.control;
    let mut node = NodeConfig::default();
    node.session.difficulty = c.difficulty;
    node.session.keepalive_interval = Duration::from_millis(c.keepalive_ms);
    node.session.dead_after = Duration::from_millis(c.dead_after_ms);
    node.kad.k = c.k;
    node.kad.subnet_bucket_max = c.subnet_bucket_max;
    node.kad.subnet_table_max = c.subnet_table_max;
    node.routing_level = c.beacon_level;
    node
}

/// What [`Router::start_xdp`] hands the later steps.
struct XdpStart {
    /// How the XDP state was found (fresh, taken over, hot restart).
    pinned_start: Option<PinnedStart>,
    /// The route cache, when the fast path is on.
    route_cache: Option<RouteCache>,
    /// The neighbor allowlist.
    neighbors: Option<NeighborMap>,
}

/// This node's identity, checked against the configured puzzle, the overlay
/// port checked free (or held by the instance a hot restart replaces), and
/// the session seed from the OS.
fn own_identity(config: &Config) -> Result<(Identity, [u8; 32]), RouterError> {
    let identity = keyfile::read(&config.key_file)?;
    let bits = puzzle_bits(&identity.node_id());
    if bits < config.control.difficulty {
        return Err(RouterError::Puzzle {
            bits,
            difficulty: config.control.difficulty,
        });
    }
    check_port(config)?;
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| RouterError::Random(e.to_string()))?;
    Ok((identity, seed))
}

/// Taking over pinned state: the control plane starts warm, keeping the
/// allowlist and the cached routes while its sessions come back.
fn warm_start(config: &Config, xdp: &XdpStart) -> Option<WarmStart> {
    match &xdp.pinned_start {
        Some(start) if start.is_takeover() && config.xdp.warm_start_ms > 0 => {
            let peers = xdp
                .neighbors
                .as_ref()
                .and_then(|map| map.keys().ok())
                .map_or(0, |keys| keys.len());
            Some(WarmStart {
                until: std::time::Instant::now() + Duration::from_millis(config.xdp.warm_start_ms),
                peers,
            })
        }
        _ => None,
    }
}

/// The control plane's node with the configured seeds and known neighbors;
/// those given by host name are returned for the control plane to resolve
/// (at start and on every re-bootstrap).
fn start_node(config: &Config, identity: Identity, seed: [u8; 32]) -> (Node, Vec<NamedPeer>) {
    let mut node = Node::new(identity, node_config(config), seed);
    let now = std::time::Instant::now();
    let mut named = Vec::new();
    for seed in &config.control.seeds {
        match seed {
            Endpoint::Addr(addr) => node.add_seed(now, *addr),
            Endpoint::Host { host, port } => named.push(NamedPeer {
                host: host.clone(),
                port: *port,
                id: None,
            }),
        }
    }
    for neighbor in &config.neighbors {
        match &neighbor.address {
            Endpoint::Addr(addr) => node.add_known(now, neighbor.id, *addr),
            Endpoint::Host { host, port } => named.push(NamedPeer {
                host: host.clone(),
                port: *port,
                id: Some(neighbor.id),
            }),
        }
    }
    (node, named)
}

/// Takes the XDP route cache and configures it from `config`: local ID (which
/// turns the fast path on), rate limits and idle timeout. `None` when the
/// fast path is switched off; the rate limits apply either way.
fn prepare_route_cache(
    xdp: &mut XdpRouter,
    config: &Config,
    identity: &Identity,
) -> Result<Option<RouteCache>, BpfError> {
    let Some(mut cache) = xdp.take_route_cache() else {
        return Ok(None);
    };
    cache.set_limits(&config.xdp.limits)?;
    cache.set_idle_timeout(Duration::from_millis(config.xdp.route_idle_timeout_ms))?;
    if !config.xdp.route_cache {
        log::info!("[xdp] route_cache = false: every data packet takes the userspace path");
        return Ok(None);
    }
    // State taken over from another node ID: its routes are not ours.
    if cache
        .local_id()
        .is_some_and(|previous| previous != identity.node_id())
    {
        log::info!("the pinned route cache belonged to another node ID: invalidating it");
        cache.invalidate_all()?;
    }
    cache.set_local_id(&identity.node_id())?;
    Ok(Some(cache))
}

/// Datagrams a socket's receive queue dropped (`SK_MEMINFO_DROPS`); 0 if
/// the kernel does not say.
fn socket_drops(socket: &socket2::Socket) -> u64 {
    crate::io::backlog::socket_meminfo(socket)
        .map_or(0, |info| u64::from(info[libc::SK_MEMINFO_DROPS as usize]))
}
