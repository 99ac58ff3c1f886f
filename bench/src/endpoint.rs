//! A benchmark endpoint that joins the overlay as a node of its own: the
//! generator and the sink of the xorlay benchmarks.
//!
//! An [`Endpoint`] is the router's sans-IO control plane
//! ([`xorlay::core::node::Node`]: Noise sessions and Kademlia) driven over
//! one UDP socket by one thread, without a data plane. It handshakes with
//! the routers it knows like any node, answers their keepalives and pings,
//! and so becomes an authenticated neighbor whose address is on their XDP
//! allowlist. Its socket then carries benchmark traffic:
//! - as the generator, [`Endpoint::generate`] sends overlay data packets
//!   addressed to the sink's node ID straight to the first router with
//!   `sendmmsg` from the endpoint's own address (what the router's
//!   allowlist admits); the live-frames generator
//!   ([`crate::livegen`]) sends the same packets from the same address;
//! - as the sink, the endpoint's thread counts the data packets addressed
//!   to it ([`Endpoint::begin_trial`], [`crate::loadgen::SinkCounter`]),
//!   while control packets go to the node.
//!
//! Unlike a generator that is a router's local application, nothing between
//! the benchmark and the router under test forwards the traffic: what is
//! measured is the relays.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use xorlay::core::NodeId;
use xorlay::core::identity::Identity;
use xorlay::core::node::{Node, NodeConfig};
use xorlay::wire::{OverlayPacket, OverlayRepr, PacketType};

use crate::lab::Lab;
use crate::loadgen::{self, GenReport, GenSpec, RecvBatch, SinkCounter, SinkResult};
use crate::traffic::monotonic_ns;

/// How long the endpoint thread waits for a datagram before it runs the
/// node's timers.
const POLL: Duration = Duration::from_millis(10);

/// What an endpoint counted outside the trials.
#[derive(Debug, Default)]
pub struct EndpointCounters {
    /// Control packets handed to the node.
    pub control_rx: AtomicU64,
    /// Control packets the node sent.
    pub control_tx: AtomicU64,
    /// Control packets the socket refused to send.
    pub control_tx_errors: AtomicU64,
    /// Data packets that arrived while no trial was counting.
    pub data_outside_trials: AtomicU64,
    /// Datagrams that are not overlay packets.
    pub garbage: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    /// Peers with an authenticated session.
    sessions: Mutex<Vec<(NodeId, SocketAddr)>>,
    /// The trial being counted, if any.
    trial: Mutex<Option<SinkCounter>>,
    /// Valid packets of the current trial.
    valid: AtomicU64,
    counters: EndpointCounters,
}

/// An overlay node run by the benchmark (see the module documentation).
#[derive(Debug)]
pub struct Endpoint {
    id: NodeId,
    bind: SocketAddr,
    netns: String,
    /// The endpoint's socket (the same open file as the thread's).
    socket: UdpSocket,
    shared: Arc<Shared>,
    thread: crate::netns::Stoppable<()>,
}

impl Endpoint {
    /// Binds `bind` in `netns` and starts the node with `identity`, which
    /// then handshakes with each of `known` (node ID, underlay address).
    /// The thread is pinned to `cpu` when given.
    pub fn start(
        netns: &str,
        bind: SocketAddr,
        identity: Identity,
        known: Vec<(NodeId, SocketAddr)>,
        cpu: Option<usize>,
    ) -> anyhow::Result<Endpoint> {
        let id = identity.node_id();
        let shared = Arc::new(Shared {
            sessions: Mutex::new(Vec::new()),
            trial: Mutex::new(None),
            valid: AtomicU64::new(0),
            counters: EndpointCounters::default(),
        });
        let (socket_tx, socket_rx) = std::sync::mpsc::sync_channel(1);
        let thread = {
            let shared = shared.clone();
            crate::netns::Stoppable::start(
                netns,
                move || {
                    if let Some(cpu) = cpu {
                        let _ = loadgen::pin_current_thread(cpu);
                    }
                    let socket = loadgen::bind_udp(bind, 8 << 20)?;
                    socket
                        .set_read_timeout(Some(POLL))
                        .context("endpoint read timeout")?;
                    let _ = socket_tx.send(socket.try_clone().context("dup the socket")?);
                    let mut seed = [0u8; 32];
                    getrandom::getrandom(&mut seed)
                        .map_err(|e| anyhow::anyhow!("the OS gave no random bytes: {e}"))?;
                    let mut node = Node::new(identity, NodeConfig::default(), seed);
                    let now = Instant::now();
                    for (id, addr) in known {
                        node.add_known(now, id, addr);
                    }
                    Ok((socket, node))
                },
                move |(socket, node), stop| run(&socket, node, &shared, stop),
            )
            .with_context(|| format!("endpoint {id} at {bind} in {netns}"))?
        };
        let socket = socket_rx
            .recv_timeout(Duration::from_secs(1))
            .context("the endpoint thread did not hand over its socket")?;
        Ok(Endpoint {
            id,
            bind,
            netns: netns.to_string(),
            socket,
            shared,
            thread,
        })
    }

    /// This endpoint's node ID.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Its underlay address.
    pub fn addr(&self) -> SocketAddr {
        self.bind
    }

    /// Its namespace.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Peers with an authenticated session now.
    pub fn sessions(&self) -> Vec<(NodeId, SocketAddr)> {
        self.shared
            .sessions
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Waits until a session with `peer` is up.
    pub fn wait_session(&self, peer: &NodeId, timeout: Duration) -> anyhow::Result<()> {
        if crate::wait_until(timeout, || self.sessions().iter().any(|(id, _)| id == peer)) {
            Ok(())
        } else {
            bail!(
                "endpoint {} at {} has no session with {peer} after {timeout:?} (sessions: {})",
                self.id,
                self.bind,
                self.sessions().len()
            )
        }
    }

    /// Starts counting trial `trial`'s data packets to this endpoint
    /// (`capacity` bounds duplicate tracking); a trial still counting is
    /// discarded.
    pub fn begin_trial(&self, trial: u32, capacity: u64) -> anyhow::Result<()> {
        let counter = SinkCounter::new(self.id, trial, capacity)?;
        let mut slot = self
            .shared
            .trial
            .lock()
            .map_err(|_| anyhow::anyhow!("endpoint thread panicked"))?;
        self.shared.valid.store(0, Ordering::Relaxed);
        *slot = Some(counter);
        Ok(())
    }

    /// Valid packets of the current trial so far.
    pub fn valid(&self) -> u64 {
        self.shared.valid.load(Ordering::Relaxed)
    }

    /// Stops counting and returns what the trial saw.
    pub fn end_trial(&self) -> anyhow::Result<SinkResult> {
        let counter = self
            .shared
            .trial
            .lock()
            .map_err(|_| anyhow::anyhow!("endpoint thread panicked"))?
            .take()
            .context("no trial was counting")?;
        Ok(counter.finish())
    }

    /// Counters outside the trials.
    pub fn counters(&self) -> &EndpointCounters {
        &self.shared.counters
    }

    /// Sends `spec` from this endpoint's address to `to` with `sendmmsg`,
    /// on a thread pinned to `cpu` when given. Blocks until done.
    pub fn generate(
        &self,
        to: SocketAddr,
        spec: GenSpec,
        cpu: Option<usize>,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<GenReport> {
        let socket = self.socket.try_clone().context("dup the endpoint socket")?;
        std::thread::Builder::new()
            .name("xl-endpoint-gen".into())
            .spawn(move || {
                if let Some(cpu) = cpu {
                    let _ = loadgen::pin_current_thread(cpu);
                }
                loadgen::generate_to(&socket, Some(to), &spec, &stop)
            })
            .context("spawning the generator thread")?
            .join()
            .map_err(|_| anyhow::anyhow!("generator panicked"))
    }

    /// Stops the endpoint's thread; returns its error, if it failed.
    pub fn stop(self) -> anyhow::Result<()> {
        self.thread.finish()
    }
}

/// The endpoint's thread: receive, count or hand to the node, run timers,
/// send what the node wants sent.
fn run(
    socket: &UdpSocket,
    mut node: Node,
    shared: &Shared,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mut batch = RecvBatch::new();
    let mut published = None;
    flush(socket, &mut node, shared, &mut published);
    while !stop.load(Ordering::Relaxed) {
        match batch.recv(socket) {
            Ok(count) => {
                let now_ns = monotonic_ns();
                let now = Instant::now();
                let mut trial = shared
                    .trial
                    .lock()
                    .map_err(|_| anyhow::anyhow!("trial lock poisoned"))?;
                for i in 0..count {
                    let datagram = batch.datagram(i);
                    let packet = OverlayPacket::new_unchecked(datagram);
                    let kind = packet
                        .check_len()
                        .ok()
                        .and_then(|()| OverlayRepr::parse(&packet).ok())
                        .map(|repr| repr.packet_type);
                    match kind {
                        Some(PacketType::Data) => match trial.as_mut() {
                            Some(counter) => {
                                if counter.record(datagram, now_ns) {
                                    shared.valid.store(counter.valid(), Ordering::Relaxed);
                                }
                            }
                            None => {
                                shared
                                    .counters
                                    .data_outside_trials
                                    .fetch_add(1, Ordering::Relaxed);
                            }
                        },
                        Some(_) => match batch.source(i) {
                            Some(from) => {
                                shared.counters.control_rx.fetch_add(1, Ordering::Relaxed);
                                node.handle_packet(now, from, datagram);
                            }
                            None => {
                                shared.counters.garbage.fetch_add(1, Ordering::Relaxed);
                            }
                        },
                        None => {
                            shared.counters.garbage.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            Err(e) => match e.kind() {
                std::io::ErrorKind::WouldBlock
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::Interrupted => {}
                _ => return Err(e).context("endpoint recvmmsg"),
            },
        }
        let now = Instant::now();
        if node.poll_timeout().is_some_and(|at| at <= now) {
            node.handle_timeout(now);
        }
        flush(socket, &mut node, shared, &mut published);
    }
    Ok(())
}

fn flush(socket: &UdpSocket, node: &mut Node, shared: &Shared, published: &mut Option<u64>) {
    while let Some(transmit) = node.poll_transmit() {
        match socket.send_to(&transmit.bytes, transmit.to) {
            Ok(_) => shared.counters.control_tx.fetch_add(1, Ordering::Relaxed),
            Err(_) => shared
                .counters
                .control_tx_errors
                .fetch_add(1, Ordering::Relaxed),
        };
    }
    if *published != Some(node.generation()) {
        *published = Some(node.generation());
        if let Ok(mut sessions) = shared.sessions.lock() {
            *sessions = node.session_peers();
        }
    }
}

/// The benchmark's generator and sink endpoints on a chain lab whose relays
/// run (gen's and the sink's routers must not): each joins its adjacent
/// router with the lab node's identity at the node's address, port 4799.
/// Returns once both have a session and both routers list them as next
/// hops (so they are on the routers' XDP allowlists).
pub fn start_endpoints(lab: &Lab, cpu: Option<usize>) -> anyhow::Result<(Endpoint, Endpoint)> {
    let sink = lab.sink_index();
    if sink < 2 {
        bail!("the lab has no relay between gen and the sink");
    }
    let gen_addr = lab.nodes[0].addr_on(0).context("gen's address")?;
    let r1 = &lab.nodes[1];
    let r1_addr = r1.addr_on(0).context("r1's address on gen's link")?;
    let sink_addr = lab.nodes[sink]
        .addr_on(sink - 1)
        .context("the sink's address")?;
    let last = &lab.nodes[sink - 1];
    let last_addr = last
        .addr_on(sink - 1)
        .context("the last relay's address on the sink's link")?;
    let sink_endpoint = Endpoint::start(
        &lab.sink().netns,
        sink_addr,
        lab.nodes[sink].identity.clone(),
        vec![(last.id(), last_addr)],
        cpu,
    )?;
    let gen_endpoint = Endpoint::start(
        &lab.generator().netns,
        gen_addr,
        lab.nodes[0].identity.clone(),
        vec![(r1.id(), r1_addr)],
        cpu,
    )?;
    gen_endpoint.wait_session(&r1.id(), Duration::from_secs(10))?;
    sink_endpoint.wait_session(&last.id(), Duration::from_secs(10))?;
    // The routers publish their allowlist and next hops on the next control
    // tick: wait until both endpoints are next hops there.
    for (i, id) in [(1, gen_endpoint.id()), (sink - 1, sink_endpoint.id())] {
        let ok = crate::wait_until(Duration::from_secs(10), || {
            lab.neighbors(i).is_ok_and(|n| n.contains(&id))
        });
        if !ok {
            bail!(
                "{} did not take the benchmark endpoint {id} as a neighbor:\n{}",
                lab.nodes[i].role,
                lab.log_tail(i)
            );
        }
    }
    Ok((gen_endpoint, sink_endpoint))
}
