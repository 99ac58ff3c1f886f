//! The control-plane shell: drives the sans-IO [`Node`] with the clock, the
//! control packets the workers hand over, and a socket to send from;
//! publishes the resulting topology to the workers; keeps good peers on disk.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use socket2::{SockAddr, Socket};

use crate::config::NAMED_PEERS_MAX;
use crate::core::forward::route_via;
use crate::core::node::{NODE_EVENTS_MAX, Node, NodeEvent};
use crate::core::session::ConnectFailure;
use crate::core::topology::{Topology, canonical, socket_form};
use crate::core::{NextHopTable, NodeId, Route};
use crate::io::bpf::{NeighborMap, RouteCache, RouteEntry};
use crate::io::ratelog::{LogLimit, held_back};
use crate::io::topology::{SharedTable, hop_for};
use crate::io::worker::Upcall;

/// Most route-cache entries made by a via that the control thread
/// tracks (to remove them when the via's route changes); past it, no more
/// are made.
const VIA_INSTALLED_MAX: usize = 1 << 16;
/// Depth of the queue from the workers to the control thread.
pub const CONTROL_QUEUE_DEPTH: usize = 4096;
/// Control packets handled per step before timers and publishing get a turn.
const PACKETS_PER_STEP_MAX: usize = 256;
/// How often good peers are written to `peers_file`.
const PERSIST_INTERVAL: Duration = Duration::from_secs(30);
/// Most peers kept in or read from `peers_file`.
pub const PERSISTED_PEERS_MAX: usize = 256;
/// Shortest interval between two logs of rejected-input counts.
const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Shortest interval between two warnings that one host name failed to
/// resolve.
const RESOLVE_WARN_INTERVAL: Duration = Duration::from_secs(300);
/// Window of the log rate limits.
const LOG_WINDOW: Duration = Duration::from_secs(10);
/// Most lines about peers and the topology per [`LOG_WINDOW`].
const PEER_LOG_BURST: u32 = 30;
/// Most lines about failed dials and sends per [`LOG_WINDOW`].
const DIAL_LOG_BURST: u32 = 10;
/// Most peers or next hops named in one log line.
const NAMED_IN_LINE_MAX: usize = 8;

/// A peer or a next hop in the change logs: its ID and its canonical
/// underlay address.
type IdAddr = (NodeId, SocketAddr);

/// Counters of the shell itself.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ShellCounters {
    /// Control packets sent.
    pub tx_packets: u64,
    /// Control packets the kernel refused (e.g. no route to that address).
    pub tx_errors: u64,
    /// Topology snapshots published to the workers.
    pub publishes: u64,
    /// Updates of the XDP neighbor allowlist.
    pub xdp_syncs: u64,
    /// Failed updates of the XDP neighbor allowlist.
    pub xdp_sync_errors: u64,
    /// Route-cache install requests received from the workers.
    pub install_requests: u64,
    /// Routes put in the XDP cache.
    pub routes_installed: u64,
    /// Negative (no-route) entries put in the XDP cache.
    pub no_routes_installed: u64,
    /// Installs or invalidations that failed.
    /// XDP route-cache entries removed because their destination's route
    /// changed (the rest of the cache stays).
    pub routes_invalidated: u64,
    pub install_errors: u64,
}

/// What connects the control plane to the data plane.
#[derive(Debug)]
pub struct ControlIo {
    /// Control packets and install requests from the workers.
    pub packets: Receiver<Upcall>,
    /// A handle on a worker socket (bound to the overlay port) to send from.
    pub socket: Socket,
    /// The workers' bind address.
    pub listen: SocketAddr,
    /// Where the topology is published.
    pub shared: SharedTable,
    /// The XDP program's neighbor allowlist, kept equal to the session peers.
    pub xdp_neighbors: Option<NeighborMap>,
    /// The XDP route cache (local ID and limits already set), filled on the
    /// workers' requests and invalidated on every change of the next hops.
    pub route_cache: Option<RouteCache>,
    /// Set when the XDP state was taken over from an earlier instance
    /// (hot restart or crash recovery): see [`WarmStart`].
    pub warm_start: Option<WarmStart>,
    /// Seeds and neighbors configured by host name, resolved on a thread
    /// of their own at start and every `resolve_interval`.
    pub named: Vec<NamedPeer>,
    /// How often host names are resolved again (the re-bootstrap period).
    pub resolve_interval: Duration,
}

/// A seed (no ID) or a neighbor (ID known) configured by host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPeer {
    /// The host name.
    pub host: String,
    /// The overlay port.
    pub port: u16,
    /// The neighbor's ID; `None` for a seed.
    pub id: Option<NodeId>,
}

impl NamedPeer {
    fn kind(&self) -> &'static str {
        if self.id.is_some() {
            "neighbor"
        } else {
            "seed"
        }
    }
}

/// Resolves `host:port` to one address this node can send to: IPv4 only
/// when `ipv4_only` (an IPv4 listen address), else IPv4 or IPv6.
pub fn resolve(host: &str, port: u16, ipv4_only: bool) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let addrs = (host, port).to_socket_addrs().map_err(|e| e.to_string())?;
    let mut found = false;
    for addr in addrs.take(64) {
        found = true;
        if !ipv4_only || addr.is_ipv4() {
            return Ok(addr);
        }
    }
    Err(if found {
        "it has IPv6 addresses only, and underlay.listen is IPv4 (listen on \"[::]\" to reach IPv6)"
            .into()
    } else {
        "no address".into()
    })
}

/// The resolver thread's side in the control plane: results, what each
/// name resolved to last, when a failure may be logged again.
#[derive(Debug)]
struct Resolver {
    peers: Vec<NamedPeer>,
    results: Receiver<(usize, Result<SocketAddr, String>)>,
    /// Dropped with the control plane: the thread ends at its next wake-up.
    _stop: crossbeam_channel::Sender<()>,
    current: Vec<Option<SocketAddr>>,
    next_warn: Vec<Instant>,
    interval: Duration,
}

impl Resolver {
    /// Starts resolving `peers` now and every `interval`; `None` if there
    /// are none (or the thread cannot start, which is logged).
    fn spawn(peers: Vec<NamedPeer>, ipv4_only: bool, interval: Duration) -> Option<Resolver> {
        if peers.is_empty() {
            return None;
        }
        let (tx, results) = crossbeam_channel::bounded(peers.len() * 2);
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let names: Vec<(String, u16)> = peers.iter().map(|p| (p.host.clone(), p.port)).collect();
        let spawned = std::thread::Builder::new()
            .name("xorlay-resolve".into())
            .spawn(move || {
                loop {
                    for (index, (host, port)) in names.iter().enumerate() {
                        let result = resolve(host, *port, ipv4_only);
                        if let Err(crossbeam_channel::TrySendError::Disconnected(_)) =
                            tx.try_send((index, result))
                        {
                            return;
                        }
                    }
                    match stopped.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                }
            });
        if let Err(e) = spawned {
            log::error!(
                "cannot start the thread that resolves seed and neighbor host names ({e}): \
                 they are not contacted; write their IP addresses instead"
            );
            return None;
        }
        let now = Instant::now();
        Some(Resolver {
            current: vec![None; peers.len()],
            next_warn: vec![now; peers.len()],
            peers,
            results,
            _stop: stop,
            interval,
        })
    }
}

/// A warm start: the XDP maps hold an earlier instance's allowlist and
/// routes, still right for the traffic in flight, while this control plane
/// has no session yet. Until `until`, or until it has at least `peers`
/// authenticated peers, publishing only adds to the allowlist (it keeps the
/// earlier peers) and never invalidates the route cache; then the allowlist
/// is made exact and the cache invalidated once (later misses go to the
/// workers, which ask for new entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmStart {
    /// End of the hold at the latest.
    pub until: Instant,
    /// Allowlist entries found at start: the hold ends early once this many
    /// peers are authenticated again.
    pub peers: usize,
}

/// The control plane of one router.
#[derive(Debug)]
pub struct ControlPlane {
    node: Node,
    packets: Receiver<Upcall>,
    socket: Socket,
    listen: SocketAddr,
    shared: SharedTable,
    xdp_neighbors: Option<NeighborMap>,
    route_cache: Option<RouteCache>,
    /// Our source address toward each next hop (as the kernel would pick
    /// it), for route-cache entries; cleared on every publish.
    sources: HashMap<SocketAddr, SocketAddr>,
    /// Route-cache entries made by a packet's via, not by the
    /// destination's own route: destination to via. They go when the
    /// via's route changes. At most [`VIA_INSTALLED_MAX`].
    via_installed: HashMap<NodeId, NodeId>,
    published: Option<u64>,
    /// The next hops of the last publish, to tell when routes change.
    published_hops: Option<Vec<(NodeId, SocketAddr)>>,
    /// The routes of the last published snapshot, sorted.
    published_routes: Vec<(NodeId, NodeId)>,
    warm_start: Option<WarmStart>,
    /// The warm start ended: the next publish invalidates the route cache.
    invalidate_pending: bool,
    peers_file: Option<PathBuf>,
    resolver: Option<Resolver>,
    /// The authenticated peers of the last publish, to log who came and went.
    logged_peers: HashMap<NodeId, SocketAddr>,
    /// Lines about peers and the topology (a churning network).
    peer_log: LogLimit,
    /// Lines about failed dials and sends (addresses anyone can feed us).
    dial_log: LogLimit,
    /// `routing.level_mismatch` when last logged.
    level_mismatches: u64,
    next_persist: Instant,
    rejected_logged: u64,
    next_reject_log: Instant,
    counters: ShellCounters,
}

impl ControlPlane {
    /// A control plane for `node`, sending through `io.socket` (bound to
    /// `io.listen`), receiving from `io.packets`, publishing into
    /// `io.shared`. Contacts the peers kept in `peers_file` too.
    pub fn start(mut node: Node, io: ControlIo, peers_file: Option<PathBuf>) -> ControlPlane {
        let now = Instant::now();
        if let Some(path) = &peers_file {
            let peers = read_peers(path);
            if !peers.is_empty() {
                log::info!(
                    "re-contacting {} peer(s) kept in {}",
                    peers.len(),
                    path.display()
                );
            }
            for (id, addr) in peers {
                node.add_known(now, id, addr);
            }
        }
        // The config refuses more, naming the fix (`config::NAMED_PEERS_MAX`).
        debug_assert!(io.named.len() <= NAMED_PEERS_MAX, "checked by config");
        let resolver = Resolver::spawn(io.named, io.listen.is_ipv4(), io.resolve_interval);
        let mut plane = ControlPlane {
            node,
            resolver,
            logged_peers: HashMap::new(),
            peer_log: LogLimit::new(LOG_WINDOW, PEER_LOG_BURST),
            dial_log: LogLimit::new(LOG_WINDOW, DIAL_LOG_BURST),
            level_mismatches: 0,
            packets: io.packets,
            socket: io.socket,
            listen: io.listen,
            shared: io.shared,
            xdp_neighbors: io.xdp_neighbors,
            route_cache: io.route_cache,
            sources: HashMap::new(),
            via_installed: HashMap::new(),
            published: None,
            published_hops: None,
            published_routes: Vec::new(),
            warm_start: io.warm_start,
            invalidate_pending: false,
            peers_file,
            next_persist: now + PERSIST_INTERVAL,
            rejected_logged: 0,
            next_reject_log: now,
            counters: ShellCounters::default(),
        };
        plane.flush();
        plane
    }

    /// One turn: waits up to `max_wait` for a control packet or the next
    /// timer, handles what arrived, sends what the node wants sent, and
    /// publishes the topology if it changed.
    pub fn step(&mut self, max_wait: Duration) {
        let now = Instant::now();
        let wait = self.node.poll_timeout().map_or(max_wait, |at| {
            at.saturating_duration_since(now).min(max_wait)
        });
        match self.packets.recv_timeout(wait) {
            Ok(upcall) => {
                self.handle_upcall(upcall);
                for _ in 0..PACKETS_PER_STEP_MAX {
                    let Ok(upcall) = self.packets.try_recv() else {
                        break;
                    };
                    self.handle_upcall(upcall);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            // Every worker has stopped: nothing more will arrive.
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
        }
        let now = Instant::now();
        self.take_resolved(now);
        if self.node.poll_timeout().is_some_and(|at| at <= now) {
            self.node.handle_timeout(now);
        }
        self.end_warm_start(now);
        self.log_events(now);
        self.flush();
        if now >= self.next_persist {
            self.persist();
            self.next_persist = now + PERSIST_INTERVAL;
        }
        self.log_rejections(now);
    }

    /// Hands the node the addresses host names resolved to, when new; a
    /// failure is logged at most every [`RESOLVE_WARN_INTERVAL`] per name
    /// and touches no other seed or neighbor.
    fn take_resolved(&mut self, now: Instant) {
        let Some(resolver) = &mut self.resolver else {
            return;
        };
        for _ in 0..resolver.peers.len() * 2 {
            let Ok((index, result)) = resolver.results.try_recv() else {
                break;
            };
            let Some(peer) = resolver.peers.get(index) else {
                continue;
            };
            match result {
                Ok(addr) if resolver.current[index] != Some(addr) => {
                    log::info!(
                        "{} {}:{} resolves to {addr}{}",
                        peer.kind(),
                        peer.host,
                        peer.port,
                        match resolver.current[index] {
                            Some(old) => format!(" (was {old})"),
                            None => String::new(),
                        }
                    );
                    resolver.current[index] = Some(addr);
                    match peer.id {
                        Some(id) => self.node.add_known(now, id, addr),
                        None => self.node.add_seed(now, addr),
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if now >= resolver.next_warn[index] {
                        resolver.next_warn[index] = now + RESOLVE_WARN_INTERVAL;
                        log::warn!(
                            "cannot resolve {} {}:{}: {e}; trying again every {} s (other seeds \
                             and neighbors are not affected; this warning repeats at most every \
                             {} s)",
                            peer.kind(),
                            peer.host,
                            peer.port,
                            resolver.interval.as_secs(),
                            RESOLVE_WARN_INTERVAL.as_secs()
                        );
                    }
                }
            }
        }
    }

    /// Logs what the node reports: failed dials (rate-limited, with the
    /// address), sessions that ended (debug; peer down is logged by
    /// `publish` with the address).
    fn log_events(&mut self, now: Instant) {
        let mismatches = self.node.counters().routing.level_mismatch;
        if mismatches > self.level_mismatches {
            self.level_mismatches = mismatches;
            if let Some((peer, level)) = self.node.routing().level_mismatch()
                && let Some(held) = self.dial_log.admit(now)
            {
                log::warn!(
                    "neighbor {} runs beacon level {level}, this router {}: routes to \
                     nodes outside a cluster can fail; set control.beacon_level the same \
                     on every router{}",
                    peer.short(),
                    self.node.routing().level(),
                    held_back(held)
                );
            }
        }
        for _ in 0..NODE_EVENTS_MAX {
            let Some(event) = self.node.poll_event() else {
                break;
            };
            match event {
                NodeEvent::Resolved { prefix, id } => log::debug!(
                    "address of {} ID bits {}: {}",
                    prefix.len(),
                    prefix.target().short(),
                    id.map_or_else(|| "no such node".to_string(), |id| id.short())
                ),
                NodeEvent::PeerDown { peer, addr, reason } => log::debug!(
                    "session with {} at {} closed: {}",
                    peer.short(),
                    canonical(addr),
                    reason.name()
                ),
                NodeEvent::DialFailed {
                    addr,
                    expect,
                    reason,
                } => {
                    let who = expect.map_or_else(|| "a seed".to_string(), |id| id.short());
                    let why = match reason {
                        ConnectFailure::Timeout => "no answer to the handshake",
                        ConnectFailure::BadKey => "its keys and node ID disagree",
                        ConnectFailure::Puzzle => "its node ID fails control.difficulty",
                        ConnectFailure::UnexpectedPeer => "another node answered",
                        // Local limits, not the peer's fault.
                        ConnectFailure::SelfConnect
                        | ConnectFailure::SessionsFull
                        | ConnectFailure::HalfOpenFull
                        | ConnectFailure::Internal => {
                            log::debug!(
                                "dial of {who} at {} not made: {reason:?}",
                                canonical(addr)
                            );
                            continue;
                        }
                    };
                    if let Some(held) = self.dial_log.admit(now) {
                        log::warn!(
                            "dial of {who} at {} failed: {why}{}",
                            canonical(addr),
                            held_back(held)
                        );
                    }
                }
            }
        }
    }

    fn handle_upcall(&mut self, upcall: Upcall) {
        match upcall {
            Upcall::Control(packet) => {
                self.node
                    .handle_packet(Instant::now(), packet.from, &packet.bytes)
            }
            Upcall::Route { dst, via, .. } => {
                self.counters.install_requests += 1;
                self.install(&dst, via);
            }
            Upcall::NoRoute { dst } => {
                self.counters.install_requests += 1;
                self.install(&dst, None);
            }
            Upcall::Locate { dst } => {
                self.node.locate(Instant::now(), &dst);
            }
        }
    }

    /// Caches the current route for `dst` in XDP. The worker's view may
    /// be older than the topology: the control thread looks the route up
    /// again, on the snapshot it published last, so no stale route enters
    /// the cache. (Hop limits are XDP's to check, per packet.)
    fn install(&mut self, dst: &NodeId, via: Option<NodeId>) {
        if self.route_cache.is_none() {
            return;
        }
        let topology = self.shared.load();
        let result = match route_via(&topology.table, dst, via.as_ref()) {
            Route::Next { hop, .. } => {
                // Found by the packet's via (dst has no route of its own):
                // the entry applies only to packets with that via. Another
                // source may name another via for dst, and a relay toward
                // that one may route dst back here.
                let by_via = via.filter(|_| topology.table.exact(dst).is_none());
                if let Some(via) = by_via {
                    if self.via_installed.len() >= VIA_INSTALLED_MAX
                        && !self.via_installed.contains_key(dst)
                    {
                        return; // the workers keep forwarding it
                    }
                    self.via_installed.insert(*dst, via);
                }
                let Some(next_hop) = hop.as_socket().map(canonical) else {
                    return;
                };
                let Some(source) = self.source_toward(next_hop) else {
                    self.counters.install_errors += 1;
                    return;
                };
                let Some(cache) = &mut self.route_cache else {
                    return;
                };
                cache
                    .install(
                        dst,
                        &RouteEntry {
                            next_hop,
                            source,
                            via: by_via,
                        },
                    )
                    .map(|()| self.counters.routes_installed += 1)
            }
            Route::Miss => {
                let Some(cache) = &mut self.route_cache else {
                    return;
                };
                cache
                    .install_no_route(dst)
                    .map(|()| self.counters.no_routes_installed += 1)
            }
            // Never cached: delivered locally.
            Route::Local => Ok(()),
        };
        match result {
            Ok(()) => log::debug!(
                "route cache: installed the current decision for {}",
                dst.short()
            ),
            Err(e) => {
                self.counters.install_errors += 1;
                log::debug!("route cache install for {dst}: {e}");
            }
        }
    }

    /// The address our packets to `next_hop` leave from: the kernel's
    /// source address choice (a connected UDP socket), with the overlay port.
    fn source_toward(&mut self, next_hop: SocketAddr) -> Option<SocketAddr> {
        if let Some(source) = self.sources.get(&next_hop) {
            return Some(*source);
        }
        let any: SocketAddr = match next_hop {
            SocketAddr::V4(_) => SocketAddr::from(([0u8; 4], 0)),
            SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
        };
        let probe = std::net::UdpSocket::bind(any).ok()?;
        probe.connect(next_hop).ok()?;
        let source = SocketAddr::new(probe.local_addr().ok()?.ip(), self.listen.port());
        if self.sources.len() < PERSISTED_PEERS_MAX * 16 {
            self.sources.insert(next_hop, source);
        }
        Some(source)
    }

    /// Sends what the node queued and publishes a changed topology.
    /// The router is stopping: tells every neighbor to route around it now
    /// and sends that before returning.
    pub fn leave(&mut self) {
        self.node.leave(Instant::now());
        self.flush();
    }

    fn flush(&mut self) {
        while let Some(transmit) = self.node.poll_transmit() {
            let to = SockAddr::from(socket_form(&self.listen, transmit.to));
            match self.socket.send_to(&transmit.bytes, &to) {
                Ok(_) => self.counters.tx_packets += 1,
                Err(e) => {
                    self.counters.tx_errors += 1;
                    if let Some(held) = self.dial_log.admit(Instant::now()) {
                        log::warn!(
                            "cannot send a control packet to {}: {e}{}",
                            canonical(transmit.to),
                            held_back(held)
                        );
                    }
                }
            }
        }
        if self.published != Some(self.node.generation()) {
            self.publish();
        }
    }

    /// Ends a warm start that has run its time or got its peers back; the
    /// next flush publishes the exact allowlist and invalidates the cache.
    fn end_warm_start(&mut self, now: Instant) {
        let Some(warm) = self.warm_start else { return };
        let peers = self.node.session_peers().len();
        if now < warm.until && peers < warm.peers {
            return;
        }
        log::info!(
            "warm start over ({peers} of {} earlier peer(s) authenticated{}): the XDP allowlist \
             now follows this node's sessions and the route cache is invalidated",
            warm.peers,
            if peers < warm.peers {
                ", hold expired"
            } else {
                ""
            }
        );
        self.warm_start = None;
        self.invalidate_pending = true;
        self.published = None;
    }

    /// Stops writing the XDP maps (allowlist, route cache): another
    /// instance took them over (a hot restart) and is their only writer now.
    pub fn release_xdp(&mut self) {
        if self.xdp_neighbors.is_some() || self.route_cache.is_some() {
            log::info!("XDP taken over by a newer instance: no longer writing its maps");
        }
        self.xdp_neighbors = None;
        self.route_cache = None;
    }

    /// Whether a warm start holds the XDP state (see [`WarmStart`]).
    pub fn warm(&self) -> bool {
        self.warm_start.is_some()
    }

    /// Builds the workers' snapshot from the node and stores it.
    fn publish(&mut self) {
        let local = self.node.local_id();
        let (neighbors, routes) = self.next_hops();
        let mut table = NextHopTable::new(
            local,
            neighbors
                .iter()
                .map(|(id, addr)| (*id, hop_for(&self.listen, *addr))),
        )
        .unwrap_or_else(|e| {
            // Contacts are unique and never this node; keep the last good view.
            log::error!("inconsistent neighbor set ({e}); publishing none");
            NextHopTable::empty(local)
        });
        table.add_routes(routes.iter().copied());
        table.add_vias(self.node.locations());
        table.set_compact(self.node.routing().level() > 0);
        let allowed: HashSet<SocketAddr> = self
            .node
            .session_peers()
            .into_iter()
            .map(|(_, addr)| socket_form(&self.listen, addr))
            .collect();
        let holding = self.warm_start.is_some();
        // The kernel filter first admits new peers, then the workers do.
        self.sync_xdp_allowlist(&allowed, holding);
        let mut hops: Vec<(NodeId, SocketAddr)> = neighbors
            .iter()
            .map(|(id, addr)| (*id, canonical(*addr)))
            .collect();
        hops.sort_unstable();
        let hops_changed = self.published_hops.as_ref() != Some(&hops);
        self.log_changes(&hops, table.len());
        let mut reinstall: Vec<NodeId> = Vec::new();
        if !holding {
            // Before the workers see the new table: no entry computed from
            // the old one stays valid. A new or lost neighbor can change any
            // greedy decision, so the whole cache goes; a change of routes
            // alone takes out the destinations whose next hop changed.
            if hops_changed || self.invalidate_pending {
                self.invalidate_routes();
            } else {
                let mut moved = changed_destinations(&self.published_routes, &routes);
                let by_via = self.moved_by_via(&mut moved);
                let cached = self.invalidate_destinations(&moved);
                reinstall = cached.into_iter().filter(|d| !by_via.contains(d)).collect();
            }
        }
        self.published_hops = Some(hops);
        self.published_routes = routes;
        self.shared
            .store(std::sync::Arc::new(Topology::new(table, allowed)));
        self.published = Some(self.node.generation());
        self.counters.publishes += 1;
        // The entries a route change removed are put back from the new
        // table at once: the workers ask for an entry only once a second
        // per destination, and traffic would go through them until then.
        for dst in reinstall {
            self.install(&dst, None);
        }
    }

    /// The next hops (Kademlia contacts with a session, and every session
    /// peer a route goes through) and the routes (destination, next hop),
    /// sorted.
    fn next_hops(&self) -> (Vec<IdAddr>, Vec<(NodeId, NodeId)>) {
        let mut neighbors = self.node.neighbors();
        let mut routes = self.node.routes();
        routes.sort_unstable();
        let peers: HashMap<NodeId, SocketAddr> = self.node.session_peers().into_iter().collect();
        let known: HashSet<NodeId> = neighbors.iter().map(|(id, _)| *id).collect();
        let mut extra: Vec<(NodeId, SocketAddr)> = routes
            .iter()
            .filter(|(_, next)| !known.contains(next))
            .filter_map(|(_, next)| peers.get(next).map(|addr| (*next, *addr)))
            .collect();
        extra.sort_unstable();
        extra.dedup();
        neighbors.extend(extra);
        (neighbors, routes)
    }

    /// Writes the session peers `allowed` to the XDP allowlist, keeping the
    /// earlier instance's entries too while `holding` a warm start; counts
    /// the sync or its failure. Nothing without XDP.
    fn sync_xdp_allowlist(&mut self, allowed: &HashSet<SocketAddr>, holding: bool) {
        if let Some(map) = &mut self.xdp_neighbors {
            let mut wanted = allowed.clone();
            if holding {
                // Warm start: keep the earlier instance's peers too.
                match map.keys() {
                    Ok(keys) => wanted.extend(keys.iter().map(|k| k.socket_addr())),
                    Err(e) => log::warn!("reading the XDP allowlist: {e}"),
                }
            }
            match map.sync(&wanted) {
                Ok(_) => self.counters.xdp_syncs += 1,
                Err(e) => {
                    self.counters.xdp_sync_errors += 1;
                    log::error!("updating the XDP neighbor allowlist: {e}");
                }
            }
        }
    }

    /// Removes the XDP route cache entries of `destinations` (their route
    /// changed); more than [`SELECTIVE_INVALIDATION_MAX`] of them, or a
    /// failed removal, invalidate the whole cache instead.
    /// Returns the destinations that had an entry.
    fn invalidate_destinations(&mut self, destinations: &[NodeId]) -> Vec<NodeId> {
        if destinations.is_empty() {
            return Vec::new();
        }
        if destinations.len() > SELECTIVE_INVALIDATION_MAX {
            self.invalidate_routes();
            return Vec::new();
        }
        let Some(cache) = &mut self.route_cache else {
            return Vec::new();
        };
        let mut cached = Vec::new();
        for dst in destinations {
            match cache.remove(dst) {
                Ok(true) => cached.push(*dst),
                Ok(false) => {}
                Err(e) => {
                    self.counters.install_errors += 1;
                    log::warn!("removing {} from the XDP route cache: {e}", dst.short());
                    self.invalidate_routes();
                    return Vec::new();
                }
            }
        }
        self.counters.routes_invalidated += destinations.len() as u64;
        cached
    }

    /// Adds to `moved` the destinations cached by a via whose route is in
    /// it (and forgets them); returns them.
    fn moved_by_via(&mut self, moved: &mut Vec<NodeId>) -> Vec<NodeId> {
        if self.via_installed.is_empty() || moved.is_empty() {
            return Vec::new();
        }
        let vias: HashSet<NodeId> = moved.iter().copied().collect();
        let gone: Vec<NodeId> = self
            .via_installed
            .iter()
            .filter(|(dst, via)| vias.contains(via) || vias.contains(dst))
            .map(|(dst, _)| *dst)
            .collect();
        for dst in &gone {
            self.via_installed.remove(dst);
            moved.push(*dst);
        }
        gone
    }

    /// Invalidates every XDP route cache entry (kept pending if that fails)
    /// and forgets the sources seen by the workers.
    fn invalidate_routes(&mut self) {
        self.via_installed.clear();
        if let Some(cache) = &mut self.route_cache {
            match cache.invalidate_all() {
                Ok(_) => self.invalidate_pending = false,
                Err(e) => {
                    self.counters.install_errors += 1;
                    log::warn!("invalidating the XDP route cache: {e}");
                }
            }
        } else {
            self.invalidate_pending = false;
        }
        self.sources.clear();
    }

    /// Logs peers that came up or went down and next hops that changed,
    /// each named by short ID and address; nothing when nothing changed.
    /// `hops` is the new sorted next-hop list.
    fn log_changes(&mut self, hops: &[(NodeId, SocketAddr)], table_len: usize) {
        let now = Instant::now();
        let (peers, up, down) = self.peer_changes();
        let before: &[(NodeId, SocketAddr)] = self.published_hops.as_deref().unwrap_or(&[]);
        let (added, removed) = hop_changes(before, hops);
        self.logged_peers = peers;
        for (list, what) in [(&up, "peer up"), (&down, "peer down")] {
            if list.is_empty() {
                continue;
            }
            if let Some(held) = self.peer_log.admit(now) {
                log::info!("{what}: {}{}", name_list(list), held_back(held));
            }
        }
        if added.is_empty() && removed.is_empty() && up.is_empty() && down.is_empty() {
            return;
        }
        if let Some(held) = self.peer_log.admit(now) {
            let mut change = Vec::new();
            if !added.is_empty() {
                change.push(format!("+ {}", name_list(&added)));
            }
            if !removed.is_empty() {
                change.push(format!("- {}", name_list(&removed)));
            }
            log::info!(
                "topology: {table_len} next hop(s), {} authenticated peer(s){}{}",
                self.logged_peers.len(),
                if change.is_empty() {
                    String::new()
                } else {
                    format!("; next hops {}", change.join(", "))
                },
                held_back(held)
            );
        }
        log::debug!(
            "next hops now: {}",
            if hops.is_empty() {
                "none".to_string()
            } else {
                name_list(hops)
            }
        );
    }

    /// The session peers now (address in canonical form), and those that
    /// came up (new, or at a new address) and went down since the last
    /// [`ControlPlane::log_changes`], both sorted.
    fn peer_changes(&self) -> (HashMap<NodeId, SocketAddr>, Vec<IdAddr>, Vec<IdAddr>) {
        let peers: HashMap<NodeId, SocketAddr> = self
            .node
            .session_peers()
            .into_iter()
            .map(|(id, addr)| (id, canonical(addr)))
            .collect();
        let mut up: Vec<(NodeId, SocketAddr)> = peers
            .iter()
            .filter(|(id, addr)| self.logged_peers.get(id) != Some(addr))
            .map(|(id, addr)| (*id, *addr))
            .collect();
        let mut down: Vec<(NodeId, SocketAddr)> = self
            .logged_peers
            .iter()
            .filter(|(id, _)| !peers.contains_key(id))
            .map(|(id, addr)| (*id, *addr))
            .collect();
        up.sort_unstable();
        down.sort_unstable();
        (peers, up, down)
    }

    /// Writes the routing table's contacts to `peers_file`.
    pub fn persist(&self) {
        let Some(path) = &self.peers_file else { return };
        let peers: Vec<(NodeId, SocketAddr)> = self
            .node
            .neighbors()
            .into_iter()
            .take(PERSISTED_PEERS_MAX)
            .collect();
        if let Err(e) = write_peers(path, &peers) {
            log::warn!(
                "cannot keep peers in {}: {e}; check control.peers_file",
                path.display()
            );
        }
    }

    fn log_rejections(&mut self, now: Instant) {
        if now < self.next_reject_log {
            return;
        }
        let counters = self.node.counters();
        let s = serde_json::to_value(counters.sessions).unwrap_or_default();
        let rejected: u64 = s
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| k.starts_with("rejected"))
                    .filter_map(|(_, v)| v.as_u64())
                    .sum()
            })
            .unwrap_or(0);
        if rejected > self.rejected_logged {
            log::warn!(
                "rejected {} control packet(s) in the last {:?} (bad, replayed, impostor or failed-puzzle input); `xorlay stats` has them by reason",
                rejected - self.rejected_logged,
                REJECT_LOG_INTERVAL
            );
            self.rejected_logged = rejected;
        }
        self.next_reject_log = now + REJECT_LOG_INTERVAL;
    }

    /// The sans-IO node (for stats).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The shell's counters.
    pub fn counters(&self) -> ShellCounters {
        self.counters
    }
}

/// The next hops in `hops` and not in `before` (added), and in `before`
/// and not in `hops` (removed); both lists sorted.
fn hop_changes(before: &[IdAddr], hops: &[IdAddr]) -> (Vec<IdAddr>, Vec<IdAddr>) {
    // Both lists are sorted: binary searches, not a scan per hop.
    debug_assert!(before.is_sorted() && hops.is_sorted());
    let added: Vec<(NodeId, SocketAddr)> = hops
        .iter()
        .filter(|h| before.binary_search(h).is_err())
        .copied()
        .collect();
    let removed: Vec<(NodeId, SocketAddr)> = before
        .iter()
        .filter(|h| hops.binary_search(h).is_err())
        .copied()
        .collect();
    (added, removed)
}

/// "0123456789abcdef at 198.18.0.2:4799, ..." for at most
/// [`NAMED_IN_LINE_MAX`] entries, then "and N more".
fn name_list(list: &[(NodeId, SocketAddr)]) -> String {
    let mut text: Vec<String> = list
        .iter()
        .take(NAMED_IN_LINE_MAX)
        .map(|(id, addr)| format!("{} at {addr}", id.short()))
        .collect();
    if list.len() > NAMED_IN_LINE_MAX {
        text.push(format!("and {} more", list.len() - NAMED_IN_LINE_MAX));
    }
    text.join(", ")
}

/// Reads `id address` lines; bad lines are skipped with a warning.
pub fn read_peers(path: &Path) -> Vec<(NodeId, SocketAddr)> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            log::warn!("cannot read kept peers {}: {e}", path.display());
            return Vec::new();
        }
    };
    let mut peers = Vec::new();
    for (n, line) in text.lines().enumerate().take(PERSISTED_PEERS_MAX * 2) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let parsed = (|| Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?)))();
        match parsed {
            Some(peer) if peers.len() < PERSISTED_PEERS_MAX => peers.push(peer),
            Some(_) => break,
            None => log::warn!(
                "{}:{}: not `<node id> <address>`; skipped",
                path.display(),
                n + 1
            ),
        }
    }
    peers
}

/// Writes peers atomically (temporary file, then rename).
pub fn write_peers(path: &Path, peers: &[(NodeId, SocketAddr)]) -> std::io::Result<()> {
    let mut text =
        String::from("# xorlay peers: <node id> <underlay address>; rewritten by the router\n");
    for (id, addr) in peers {
        text.push_str(&format!("{id} {}\n", canonical(*addr)));
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Most route-cache entries removed one by one when routes change; more
/// invalidate the whole cache (one map write instead of many).
pub const SELECTIVE_INVALIDATION_MAX: usize = 1024;

/// The destinations whose next hop differs between two sorted route lists
/// (appeared, went, or moved).
fn changed_destinations(old: &[(NodeId, NodeId)], new: &[(NodeId, NodeId)]) -> Vec<NodeId> {
    let (mut i, mut j) = (0, 0);
    let mut changed = Vec::new();
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) if a.0 == b.0 => {
                if a.1 != b.1 {
                    changed.push(a.0);
                }
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a.0 < b.0 => {
                changed.push(a.0);
                i += 1;
            }
            (Some(_), Some(b)) => {
                changed.push(b.0);
                j += 1;
            }
            (Some(a), None) => {
                changed.push(a.0);
                i += 1;
            }
            (None, Some(b)) => {
                changed.push(b.0);
                j += 1;
            }
            (None, None) => break,
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    #[test]
    fn changed_destinations_are_the_moved_new_and_gone() {
        let id = |b: u8| crate::core::NodeId::from_bytes([b; 32]);
        let old = vec![
            (id(1), id(10)),
            (id(2), id(10)),
            (id(3), id(11)),
            (id(5), id(10)),
        ];
        let new = vec![
            (id(2), id(10)),
            (id(3), id(12)),
            (id(4), id(10)),
            (id(5), id(10)),
        ];
        assert_eq!(
            super::changed_destinations(&old, &new),
            vec![id(1), id(3), id(4)]
        );
        assert!(super::changed_destinations(&new, &new).is_empty());
        assert_eq!(super::changed_destinations(&[], &new).len(), 4);
    }

    use super::*;

    #[test]
    fn host_names_resolve_by_family() {
        let v4 = resolve("localhost", 4799, true).expect("localhost is in /etc/hosts");
        assert_eq!(v4, SocketAddr::from(([127, 0, 0, 1], 4799)));
        resolve("localhost", 4799, false).expect("any family");
        assert!(
            resolve("127.0.0.1", 1, true).is_ok(),
            "a literal resolves to itself"
        );
    }

    #[test]
    fn peers_file_roundtrip_skips_bad_lines() {
        let path = std::env::temp_dir().join(format!("xorlay-peers-test-{}", std::process::id()));
        let a = (
            NodeId::from_bytes([1; 32]),
            "198.18.0.1:4799".parse().expect("literal"),
        );
        let b = (
            NodeId::from_bytes([2; 32]),
            "[fd00::2]:4799".parse().expect("literal"),
        );
        write_peers(&path, &[a, b]).expect("write temp file");
        let mut text = std::fs::read_to_string(&path).expect("read back");
        text.push_str("garbage line\n");
        std::fs::write(&path, text).expect("rewrite");
        assert_eq!(read_peers(&path), vec![a, b]);
        std::fs::remove_file(&path).expect("cleanup");
        assert!(read_peers(&path).is_empty());
    }
}
