//! The Kademlia state machine, sans-IO: routing table, liveness checks,
//! iterative lookups, bootstrap and maintenance.
//!
//! No sockets, no clock reads, no OS randomness: time comes in as `now`,
//! randomness from a seed. Messages travel inside authenticated sessions
//! (`core::session`): the session layer has proven that a peer owns its node
//! ID before any of our `handle_*` calls name it, so this module deals in
//! node IDs, socket addresses and plaintext messages ([`crate::wire::kad`]).
//!
//! # Driving it
//! After every `handle_*` call (and `start_lookup`, `add_seed`, `add_known`),
//! drain [`Kademlia::poll_action`] and [`Kademlia::poll_event`], then arm a
//! timer for [`Kademlia::poll_timeout`] and call [`Kademlia::handle_timeout`]
//! when it fires. Spurious or early `handle_timeout` calls are harmless.
//!
//! The glue is expected to:
//! - on [`KadAction::Connect`]: handshake with `addr`; on success call
//!   `handle_connected(peer, addr)`; if it fails, or the proven ID differs
//!   from `expect`, call `handle_unreachable(addr, expect)`. A `Connect` to
//!   a peer whose session is already up reports `handle_connected` again.
//! - on [`KadAction::Send`]: send over the session with `peer`, handshaking
//!   first if there is none; if that fails, `handle_unreachable(addr,
//!   Some(peer))`. Messages may be lost: timeouts cover that.
//! - call `handle_connected` for inbound sessions too, and
//!   `handle_disconnected` when any session dies (keepalive timeout, close).
//!
//! # "Live" and the table
//! A node enters the table only after proving it is alive: a session came
//! up (`handle_connected`) or a message arrived over one. Table contacts are
//! what [`Kademlia::contacts`] returns, what NODES replies hand out, and
//! what the data plane uses as neighbors. Nodes learned from NODES replies
//! are only lookup candidates until a session with them comes up.
//!
//! # Table hygiene
//! 256 buckets by common-prefix length with the local ID. A full bucket
//! keeps its contacts (long-lived nodes are the most likely to stay): the
//! newcomer waits in the bucket's replacement cache and the
//! least-recently-seen contact is pinged (unless it was heard from within
//! `recently_seen`). Only a ping that fails `request_attempts` times, or
//! the contact's session dying, removes it; the most recently seen
//! replacement that fits the subnet limits takes its place. A contact that
//! stops answering lookup requests gets the same ping. Per-subnet limits
//! (IPv4 /24, IPv6 /64) apply per bucket and per table; a node over them is
//! rejected, counted and disconnected (unless we await its answer).
//!
//! # Maintenance
//! - Join: when the first contact comes up, a self-lookup.
//! - Refresh: buckets up to one past the deepest non-empty one that saw no
//!   lookup in their range for `refresh_interval` get a lookup of a random
//!   ID in their range. A self-lookup counts for every bucket at least as
//!   deep as its k-th closest live node (it explored them).
//! - Re-bootstrap, every `rebootstrap_interval` and at once when the table
//!   empties: connect to the seeds and known peers that are not contacts;
//!   the first to connect is asked FIND_NODE(self) with the table's k
//!   closest counted as already answered, so a healthy network pays one
//!   request and a fragment learns what the seed knows near this node.
//! - A self-lookup that got no answer at all is retried after
//!   `request_timeout`, a few times.
//!
//! # Bounds
//! Every collection is bounded: buckets (k) and replacement caches
//! (`replacements_max`) per bucket; [`USER_LOOKUPS_MAX`] +
//! [`MAINTENANCE_LOOKUPS_MAX`] lookups of at most `4k + alpha` candidates
//! and [`LOOKUP_QUERIED_MAX`] queried nodes each; [`PINGS_MAX`] pings,
//! `connects_in_flight_max` connects, [`SEEDS_MAX`] seeds, [`KNOWN_MAX`]
//! known peers; [`ACTIONS_MAX`] queued actions and [`EVENTS_MAX`] queued
//! events (beyond which new ones are dropped and counted: drain the queues
//! after every call and they never fill).

mod buckets;
mod lookup;
mod rng;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use self::buckets::{Insert, RoutingTable};
use self::lookup::{Lookup, Purpose};
use self::rng::SplitMix64;
use crate::core::NodeId;
use crate::wire::kad::{self, Repr};

pub use self::lookup::LookupId;

/// Most user lookups ([`Kademlia::start_lookup`]) running at once.
pub const USER_LOOKUPS_MAX: usize = 8;
/// Most maintenance lookups (join, refresh, re-bootstrap) running at once.
pub const MAINTENANCE_LOOKUPS_MAX: usize = 4;
/// Most distinct nodes one lookup queries.
pub const LOOKUP_QUERIED_MAX: u32 = 64;
/// Most liveness pings outstanding.
pub const PINGS_MAX: usize = 64;
/// Most seed addresses kept.
pub const SEEDS_MAX: usize = 16;
/// Most known peers ([`Kademlia::add_known`]) kept.
pub const KNOWN_MAX: usize = 64;
/// Most lost contacts being redialed at once.
pub const REDIAL_MAX: usize = 64;
/// Redial attempts per lost contact: after 1, 2, 4, 8 and 16 s (about 31 s,
/// when the periodic re-bootstrap and bucket refreshes take over).
pub const REDIAL_ATTEMPTS: u32 = 5;
/// Delay before the first redial of a lost contact; doubles per attempt.
pub const REDIAL_FIRST: Duration = Duration::from_secs(1);
/// A configured neighbor (`add_known`) that was lost is redialed for as
/// long as it stays lost, at most this far apart: a partition that heals is
/// healed within this (plus a handshake), however long it lasted.
pub const KNOWN_REDIAL_MAX: Duration = Duration::from_secs(4);
/// Most actions queued for [`Kademlia::poll_action`].
pub const ACTIONS_MAX: usize = 1024;
/// Most events queued for [`Kademlia::poll_event`].
pub const EVENTS_MAX: usize = 64;
/// Upper bound of `connects_in_flight_max`.
pub const CONNECTS_IN_FLIGHT_LIMIT: usize = 64;
/// Upper bound of `replacements_max`.
pub const REPLACEMENTS_LIMIT: usize = 64;
/// Upper bound of `request_attempts`.
pub const REQUEST_ATTEMPTS_LIMIT: u32 = 8;
/// Retries of a self-lookup that got no answer, before waiting for the next
/// refresh or re-bootstrap.
const SELF_LOOKUP_RETRIES_MAX: u32 = 3;

// A LookupDone per user lookup and one TableChanged fit the event queue.
const _: () = assert!(USER_LOOKUPS_MAX < EVENTS_MAX);

/// Tunables. [`Kademlia::new`] clamps them into their documented ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KadConfig {
    /// Bucket size and lookup width; 1..=[`kad::CONTACTS_MAX`] (a NODES
    /// reply of k contacts must fit one message). Default 16.
    pub k: usize,
    /// Parallel FIND_NODE requests per lookup; 1..=k. Default 3.
    pub alpha: usize,
    /// Replacement cache size per bucket; 0..=[`REPLACEMENTS_LIMIT`].
    /// Default 16 (k).
    pub replacements_max: usize,
    /// How long to wait for a PONG or NODES before trying again or giving
    /// up; at least 1 ms. Default 1 s.
    pub request_timeout: Duration,
    /// Attempts per request (FIND_NODE of a lookup, PING before an
    /// eviction) before the node counts as failed; 1..=8. Default 3, so that
    /// lost datagrams (a few percent) neither evict a live contact nor make
    /// a lookup miss its target: with 5% loss each way an attempt fails
    /// about 10% of the time, three in a row 0.1%.
    pub request_attempts: u32,
    /// A full bucket's least-recently-seen contact is pinged only if it has
    /// not been heard from for this long (it just proved itself otherwise;
    /// its session's keepalives cover the rest). Default 5 s.
    pub recently_seen: Duration,
    /// Buckets without a lookup in their range for this long are refreshed
    /// (a lookup of a random ID in the range); at least 1 s. Default 60 s.
    pub refresh_interval: Duration,
    /// Period of re-bootstrap from seeds and known peers (also done at once
    /// when the table becomes empty); at least 1 s. Default 30 s.
    pub rebootstrap_interval: Duration,
    /// Most contacts per IPv4 /24 or IPv6 /64 in one bucket (and in one
    /// replacement cache); at least 1. Default 2.
    pub subnet_bucket_max: usize,
    /// Most contacts per IPv4 /24 or IPv6 /64 in the table; at least 1.
    /// Default 10.
    pub subnet_table_max: usize,
    /// Most `Connect` actions awaiting an answer;
    /// 1..=[`CONNECTS_IN_FLIGHT_LIMIT`]. Default 8.
    pub connects_in_flight_max: usize,
    /// A `Connect` the glue never answered frees its slot after this long;
    /// at least 1 ms. Default 5 s.
    pub connect_timeout: Duration,
}

impl Default for KadConfig {
    fn default() -> KadConfig {
        KadConfig {
            k: 16,
            alpha: 3,
            replacements_max: 16,
            request_timeout: Duration::from_secs(1),
            request_attempts: 3,
            recently_seen: Duration::from_secs(5),
            refresh_interval: Duration::from_secs(60),
            rebootstrap_interval: Duration::from_secs(30),
            subnet_bucket_max: 2,
            subnet_table_max: 10,
            connects_in_flight_max: 8,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl KadConfig {
    fn clamped(mut self) -> KadConfig {
        self.k = self.k.clamp(1, kad::CONTACTS_MAX);
        self.alpha = self.alpha.clamp(1, self.k);
        self.replacements_max = self.replacements_max.min(REPLACEMENTS_LIMIT);
        self.request_timeout = self.request_timeout.max(Duration::from_millis(1));
        self.request_attempts = self.request_attempts.clamp(1, REQUEST_ATTEMPTS_LIMIT);
        self.refresh_interval = self.refresh_interval.max(Duration::from_secs(1));
        self.rebootstrap_interval = self.rebootstrap_interval.max(Duration::from_secs(1));
        self.subnet_bucket_max = self.subnet_bucket_max.max(1);
        self.subnet_table_max = self.subnet_table_max.max(1);
        self.connects_in_flight_max = self
            .connects_in_flight_max
            .clamp(1, CONNECTS_IN_FLIGHT_LIMIT);
        self.connect_timeout = self.connect_timeout.max(Duration::from_millis(1));
        self
    }
}

/// What the glue should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KadAction {
    /// Establish a session with `addr`; `expect` is the ID it must prove
    /// (None for seeds, whose IDs are unknown).
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Whom.
        expect: Option<NodeId>,
    },
    /// Send `bytes` (a [`kad::Repr`]) over the session with `peer`,
    /// establishing it first if needed.
    Send {
        /// To whom.
        peer: NodeId,
        /// Where it was last seen.
        addr: SocketAddr,
        /// The message.
        bytes: Vec<u8>,
    },
    /// Close the session with `peer`: evicted after a failed ping, or
    /// rejected by a subnet limit.
    Disconnect {
        /// Whom.
        peer: NodeId,
    },
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KadEvent {
    /// A lookup started with [`Kademlia::start_lookup`] finished.
    LookupDone {
        /// As returned by `start_lookup`.
        id: LookupId,
        /// The ID looked up.
        target: NodeId,
        /// Up to k nodes that answered, closest to `target` first (the
        /// target itself first when it is alive and reachable).
        closest: Vec<(NodeId, SocketAddr)>,
        /// Distinct nodes queried.
        queried: u32,
        /// The longest chain of request/answer round trips (1 when a table
        /// contact answered and nothing closer turned up).
        rounds: u32,
    },
    /// The contact set changed ([`Kademlia::generation`] bumped); queued at
    /// most once until polled.
    TableChanged,
}

/// Counters, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KadCounters {
    /// Messages handed to `handle_message`.
    pub messages_in: u64,
    /// Messages that did not parse (or claimed to come from this node).
    pub messages_bad: u64,
    /// PONG or NODES that answered nothing we asked.
    pub responses_unsolicited: u64,
    /// `Send` actions emitted.
    pub messages_out: u64,
    /// Nodes that entered the table (including promotions).
    pub contacts_added: u64,
    /// Contacts removed because their session died.
    pub contacts_lost: u64,
    /// Contacts evicted after a failed ping.
    pub evictions: u64,
    /// Nodes rejected by a per-subnet limit.
    pub subnet_rejected: u64,
    /// Contacts in NODES replies that were this node or had an unusable
    /// address (unspecified, multicast, port 0).
    pub contacts_invalid: u64,
    /// PINGs sent (first attempts and retries).
    pub pings_sent: u64,
    /// FIND_NODE attempts that timed out.
    pub requests_timed_out: u64,
    /// Lookups started (user and maintenance).
    pub lookups_started: u64,
    /// Lookups finished.
    pub lookups_done: u64,
    /// User lookups refused: [`USER_LOOKUPS_MAX`] were running.
    pub lookups_rejected: u64,
    /// `Connect` actions emitted.
    pub connects_started: u64,
    /// Connects reported unreachable or never answered.
    pub connects_failed: u64,
    /// Connects not started: at `connects_in_flight_max`.
    pub connects_deferred: u64,
    /// Bucket refresh lookups started.
    pub refreshes: u64,
    /// Re-bootstrap rounds.
    pub rebootstraps: u64,
    /// Connects to contacts whose session had died.
    pub redials: u64,
    /// Lost contacts back in a session after a redial or their own connect.
    pub redials_recovered: u64,
    /// Actions dropped because the queue was full.
    pub actions_dropped: u64,
    /// Events dropped because the queue was full.
    pub events_dropped: u64,
}

#[derive(Debug, Clone, Copy)]
struct Ping {
    peer: NodeId,
    addr: SocketAddr,
    request_id: u64,
    deadline: Instant,
    attempts: u32,
}

/// A contact whose session died, to be connected to again.
#[derive(Debug, Clone, Copy)]
struct Redial {
    id: NodeId,
    addr: SocketAddr,
    /// Attempts made so far.
    attempts: u32,
    /// When the next attempt is due.
    due: Instant,
}

#[derive(Debug, Clone, Copy)]
struct PendingConnect {
    addr: SocketAddr,
    expect: Option<NodeId>,
    deadline: Instant,
    bootstrap: bool,
}

/// How a lookup's first candidates are chosen.
#[derive(Debug, Clone, Copy)]
enum Seeding {
    /// The k closest table contacts.
    Table,
    /// Ask this bootstrap peer; the k closest table contacts count as
    /// answered (they are live), so only what the peer adds is asked.
    Heal(NodeId, SocketAddr),
}

#[derive(Debug, Clone, Copy)]
struct Seed {
    addr: SocketAddr,
    /// Learned when a session with `addr` comes up.
    id: Option<NodeId>,
}

/// The Kademlia node. See the module documentation for the call order.
#[derive(Debug)]
pub struct Kademlia {
    local: NodeId,
    config: KadConfig,
    rng: SplitMix64,
    table: RoutingTable,
    lookups: Vec<Lookup>,
    pings: Vec<Ping>,
    connects: Vec<PendingConnect>,
    seeds: Vec<Seed>,
    known: Vec<(NodeId, SocketAddr)>,
    /// Lost contacts to connect to again (bounded by [`REDIAL_MAX`]).
    redials: Vec<Redial>,
    /// Connects of the current re-bootstrap round not yet started.
    bootstrap_queue: VecDeque<(SocketAddr, Option<NodeId>)>,
    /// Start a self-lookup when the next bootstrap connect succeeds.
    bootstrap_lookup_pending: bool,
    actions: VecDeque<KadAction>,
    events: VecDeque<KadEvent>,
    table_changed_queued: bool,
    generation: u64,
    next_request_id: u64,
    next_lookup_id: u64,
    started: Option<Instant>,
    next_refresh: Option<Instant>,
    next_rebootstrap: Option<Instant>,
    self_lookup_retry_at: Option<Instant>,
    self_lookup_retries: u32,
    counters: KadCounters,
}

impl Kademlia {
    /// A node with ID `local`. `rng_seed` drives refresh targets and request
    /// IDs (not security-relevant: sessions authenticate everything).
    pub fn new(local: NodeId, config: KadConfig, rng_seed: u64) -> Kademlia {
        let config = config.clamped();
        let mut rng = SplitMix64::new(rng_seed);
        let next_request_id = rng.next_u64();
        Kademlia {
            local,
            table: RoutingTable::new(
                local,
                config.k,
                config.replacements_max,
                config.subnet_bucket_max,
                config.subnet_table_max,
            ),
            config,
            rng,
            lookups: Vec::with_capacity(USER_LOOKUPS_MAX + MAINTENANCE_LOOKUPS_MAX),
            pings: Vec::new(),
            connects: Vec::new(),
            seeds: Vec::new(),
            known: Vec::new(),
            redials: Vec::new(),
            bootstrap_queue: VecDeque::new(),
            bootstrap_lookup_pending: false,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            table_changed_queued: false,
            generation: 0,
            next_request_id,
            next_lookup_id: 0,
            started: None,
            next_refresh: None,
            next_rebootstrap: None,
            self_lookup_retry_at: None,
            self_lookup_retries: 0,
            counters: KadCounters::default(),
        }
    }

    /// This node's ID.
    pub fn local(&self) -> &NodeId {
        &self.local
    }

    /// The configuration in force (after clamping).
    pub fn config(&self) -> &KadConfig {
        &self.config
    }

    /// Adds a bootstrap address (ID unknown) and connects to it. At most
    /// [`SEEDS_MAX`] are kept; duplicates are ignored.
    pub fn add_seed(&mut self, now: Instant, addr: SocketAddr) {
        self.clock(now);
        if !self.seeds.iter().any(|s| s.addr == addr) && self.seeds.len() < SEEDS_MAX {
            self.seeds.push(Seed { addr, id: None });
        }
        self.bootstrap_lookup_pending = true;
        self.connect(now, addr, None, true);
    }

    /// Adds a peer known from an earlier run (persisted by the shell) and
    /// connects to it; re-bootstraps use it too. At most [`KNOWN_MAX`].
    pub fn add_known(&mut self, now: Instant, id: NodeId, addr: SocketAddr) {
        self.clock(now);
        if id == self.local {
            return;
        }
        if let Some(entry) = self.known.iter_mut().find(|(k, _)| *k == id) {
            entry.1 = addr;
        } else if self.known.len() < KNOWN_MAX {
            self.known.push((id, addr));
        }
        if !self.table.contains(&id) {
            self.bootstrap_lookup_pending = true;
            self.connect(now, addr, Some(id), true);
        }
    }

    /// A session with `peer` (proven owner of its ID) is up, inbound or
    /// outbound. Repeated calls are harmless.
    pub fn handle_connected(&mut self, now: Instant, peer: NodeId, addr: SocketAddr) {
        self.clock(now);
        if peer == self.local {
            return;
        }
        let before = self.connects.len();
        let mut bootstrap = false;
        self.connects.retain(|c| {
            let done = c.addr == addr || c.expect == Some(peer);
            bootstrap |= done && c.bootstrap;
            !done
        });
        let freed = before != self.connects.len();
        for seed in &mut self.seeds {
            if seed.addr == addr {
                seed.id = Some(peer);
            }
        }
        if let Some(i) = self.redials.iter().position(|r| r.id == peer) {
            self.redials.swap_remove(i);
            self.counters.redials_recovered += 1;
        }
        let was_empty = self.table.is_empty();
        let rejected = self.observe(now, peer, addr);
        if rejected && !self.awaits(&peer) {
            self.push_action(KadAction::Disconnect { peer });
        }
        let joined = was_empty && !self.table.is_empty();
        if joined {
            // Join: a self-lookup finds this node's neighbourhood and tells
            // it about this node.
            self.bootstrap_lookup_pending = false;
            self.start_maintenance(now, self.local, Seeding::Table);
        } else if bootstrap && self.bootstrap_lookup_pending {
            // Re-bootstrap: ask the seed what it knows near this node (it
            // may be in another fragment of the network); the table's
            // contacts are not asked again, so in a healthy network this
            // costs one request.
            self.bootstrap_lookup_pending = false;
            self.start_maintenance(now, self.local, Seeding::Heal(peer, addr));
        }
        if freed {
            self.pump_bootstrap(now);
        }
    }

    /// The session with `peer` died: it leaves the table (a replacement
    /// takes its slot) and its outstanding requests fail. If it was a
    /// contact, it is redialed after [`REDIAL_FIRST`], then at doubling
    /// intervals, [`REDIAL_ATTEMPTS`] times (a configured neighbor: until it
    /// is back, at most [`KNOWN_REDIAL_MAX`] apart): a session lost to a burst of
    /// packet loss (an overloaded link drops keepalives like anything else)
    /// comes back within seconds instead of at the next re-bootstrap; a node
    /// that is really gone costs a few handshake attempts.
    pub fn handle_disconnected(&mut self, now: Instant, peer: NodeId) {
        self.clock(now);
        self.pings.retain(|p| p.peer != peer);
        let lost = self.table.get(&peer).map(|c| c.addr);
        self.remove_contact(now, &peer, false);
        self.fail_peer(now, &peer);
        if let Some(addr) = lost {
            self.redials.retain(|r| r.id != peer);
            if self.redials.len() < REDIAL_MAX {
                self.redials.push(Redial {
                    id: peer,
                    addr,
                    attempts: 0,
                    due: now + REDIAL_FIRST,
                });
            }
        }
    }

    /// Connects to the lost contacts whose redial is due and not back yet.
    fn redial_due(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.redials.len() {
            let r = self.redials[i];
            let known = self.known.iter().any(|(k, _)| *k == r.id);
            if self.table.contains(&r.id) || (!known && r.attempts >= REDIAL_ATTEMPTS) {
                self.redials.swap_remove(i);
                continue;
            }
            if r.due <= now {
                self.counters.redials += 1;
                self.connect(now, r.addr, Some(r.id), false);
                let entry = &mut self.redials[i];
                entry.attempts = entry.attempts.saturating_add(1);
                let backoff = REDIAL_FIRST * (1u32 << entry.attempts.min(16));
                entry.due = now
                    + if known {
                        backoff.min(KNOWN_REDIAL_MAX)
                    } else {
                        backoff
                    };
            }
            i += 1;
        }
    }

    /// A `Connect` (or the handshake before a `Send`) to `addr` failed.
    pub fn handle_unreachable(&mut self, now: Instant, addr: SocketAddr, expect: Option<NodeId>) {
        self.clock(now);
        let before = self.connects.len();
        self.connects
            .retain(|c| !(c.addr == addr && (expect.is_none() || c.expect == expect)));
        let freed = before - self.connects.len();
        self.counters.connects_failed += freed as u64;
        let peer = expect.or_else(|| self.lookups.iter().find_map(|l| l.in_flight_to_addr(&addr)));
        if let Some(peer) = peer {
            if let Some(i) = self.pings.iter().position(|p| p.peer == peer) {
                let ping = self.pings.swap_remove(i);
                self.ping_failed(now, ping);
            }
            self.fail_peer(now, &peer);
            self.redial_known(now, peer);
        }
        if freed > 0 {
            self.pump_bootstrap(now);
        }
    }

    /// A configured neighbor that could not be reached (not in the table,
    /// not already being redialed) is redialed like a lost contact, rather
    /// than at the next re-bootstrap: it may just be starting.
    fn redial_known(&mut self, now: Instant, peer: NodeId) {
        let Some(&(_, addr)) = self.known.iter().find(|(k, _)| *k == peer) else {
            return;
        };
        if self.table.contains(&peer)
            || self.redials.iter().any(|r| r.id == peer)
            || self.redials.len() >= REDIAL_MAX
        {
            return;
        }
        self.redials.push(Redial {
            id: peer,
            addr,
            attempts: 0,
            due: now + REDIAL_FIRST,
        });
    }

    /// A message from `peer` over its session. Never panics; malformed
    /// messages are counted and dropped.
    pub fn handle_message(&mut self, now: Instant, peer: NodeId, addr: SocketAddr, bytes: &[u8]) {
        self.clock(now);
        self.counters.messages_in += 1;
        if peer == self.local {
            self.counters.messages_bad += 1;
            return;
        }
        let Ok(repr) = Repr::parse_bytes(bytes) else {
            self.counters.messages_bad += 1;
            return;
        };
        if let Repr::Pong { request_id } = repr
            && !self
                .pings
                .iter()
                .any(|p| p.peer == peer && p.request_id == request_id)
        {
            self.counters.responses_unsolicited += 1;
        }
        // Any message over a session proves liveness (and clears a ping).
        let rejected = self.observe(now, peer, addr);
        match repr {
            Repr::Ping { request_id } => self.send(peer, addr, &Repr::Pong { request_id }),
            Repr::Pong { .. } => {}
            Repr::FindNode { request_id, target } => {
                let k = self.config.k;
                let contacts = self
                    .table
                    .closest(&target, k + 1)
                    .into_iter()
                    .filter(|c| c.id != peer)
                    .take(k)
                    .map(|c| kad::Contact {
                        id: c.id,
                        addr: c.addr,
                    })
                    .collect();
                self.send(
                    peer,
                    addr,
                    &Repr::Nodes {
                        request_id,
                        contacts,
                    },
                );
            }
            Repr::Nodes {
                request_id,
                contacts,
            } => self.on_nodes(now, peer, request_id, &contacts),
        }
        if rejected && !self.awaits(&peer) {
            self.push_action(KadAction::Disconnect { peer });
        }
    }

    /// Processes everything due at `now`: request and ping timeouts, lookup
    /// progress, connect timeouts, bucket refresh, re-bootstrap.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock(now);
        // Pings.
        let mut due = Vec::new();
        self.pings.retain(|p| {
            let is_due = p.deadline <= now;
            if is_due {
                due.push(*p);
            }
            !is_due
        });
        for ping in due {
            self.ping_failed(now, ping);
        }
        // Lookups.
        let mut failed = Vec::new();
        let mut timed_out = 0;
        for lookup in &mut self.lookups {
            timed_out += lookup.on_timeout(now, self.config.request_attempts, &mut failed);
        }
        self.counters.requests_timed_out += timed_out;
        for peer in failed {
            // A contact that stopped answering gets a liveness check.
            if let Some(c) = self.table.get(&peer).copied() {
                self.ping(now, c.id, c.addr);
            }
        }
        self.advance_all(now);
        if self.self_lookup_retry_at.is_some_and(|t| t <= now) {
            self.self_lookup_retry_at = None;
            self.start_maintenance(now, self.local, Seeding::Table);
        }
        // Connects the glue never answered.
        let before = self.connects.len();
        self.connects.retain(|c| c.deadline > now);
        let expired = before - self.connects.len();
        if expired > 0 {
            self.counters.connects_failed += expired as u64;
            self.pump_bootstrap(now);
        }
        if self.next_refresh.is_some_and(|t| t <= now) {
            self.refresh(now);
        }
        if self.next_rebootstrap.is_some_and(|t| t <= now) {
            self.rebootstrap(now);
        }
        self.redial_due(now);
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pings = self.pings.iter().map(|p| p.deadline);
        let lookups = self.lookups.iter().filter_map(Lookup::next_deadline);
        let connects = self.connects.iter().map(|c| c.deadline);
        let redials = self.redials.iter().map(|r| r.due);
        pings
            .chain(lookups)
            .chain(connects)
            .chain(redials)
            .chain(self.next_refresh)
            .chain(self.next_rebootstrap)
            .chain(self.self_lookup_retry_at)
            .min()
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<KadAction> {
        self.actions.pop_front()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<KadEvent> {
        let event = self.events.pop_front();
        if event == Some(KadEvent::TableChanged) {
            self.table_changed_queued = false;
        }
        event
    }

    /// Starts an iterative lookup of `target`; its result comes as
    /// [`KadEvent::LookupDone`] (at once if the table is empty). None when
    /// [`USER_LOOKUPS_MAX`] lookups are running.
    pub fn start_lookup(&mut self, now: Instant, target: NodeId) -> Option<LookupId> {
        self.clock(now);
        let running = self
            .lookups
            .iter()
            .filter(|l| l.purpose == Purpose::User)
            .count();
        if running >= USER_LOOKUPS_MAX {
            self.counters.lookups_rejected += 1;
            return None;
        }
        Some(self.begin_lookup(now, target, Purpose::User, Seeding::Table))
    }

    /// The live table: the data plane's neighbor set.
    pub fn contacts(&self) -> impl Iterator<Item = (NodeId, SocketAddr)> {
        self.table.iter().map(|c| (c.id, c.addr))
    }

    /// Number of contacts.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True without contacts.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Up to `count` contacts closest to `target`, sorted by XOR distance.
    pub fn closest(&self, target: &NodeId, count: usize) -> Vec<(NodeId, SocketAddr)> {
        self.table
            .closest(target, count)
            .into_iter()
            .map(|c| (c.id, c.addr))
            .collect()
    }

    /// Bumps whenever the contact set (or a contact's address) changes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The counters.
    pub fn counters(&self) -> KadCounters {
        self.counters
    }

    /// Checks the table's invariants and every bound; the first broken one.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        self.table.check_invariants()?;
        let user = self
            .lookups
            .iter()
            .filter(|l| l.purpose == Purpose::User)
            .count();
        if user > USER_LOOKUPS_MAX || self.lookups.len() - user > MAINTENANCE_LOOKUPS_MAX {
            return Err(format!("{} lookups", self.lookups.len()));
        }
        if self.pings.len() > PINGS_MAX {
            return Err(format!("{} pings", self.pings.len()));
        }
        if self.connects.len() > self.config.connects_in_flight_max {
            return Err(format!("{} connects", self.connects.len()));
        }
        if self.actions.len() > ACTIONS_MAX || self.events.len() > EVENTS_MAX {
            return Err("queue over its bound".to_string());
        }
        Ok(())
    }

    // ---- internals ----

    /// Arms the periodic timers on the first call that brings a time.
    fn clock(&mut self, now: Instant) {
        if self.started.is_none() {
            self.started = Some(now);
            self.next_refresh = Some(now + self.config.refresh_interval);
            self.next_rebootstrap = Some(now + self.config.rebootstrap_interval);
        }
    }

    fn request_id(&mut self) -> u64 {
        self.next_request_id = self.next_request_id.wrapping_add(1);
        self.next_request_id
    }

    fn push_action(&mut self, action: KadAction) {
        if self.actions.len() >= ACTIONS_MAX {
            self.counters.actions_dropped += 1;
        } else {
            self.actions.push_back(action);
        }
    }

    fn push_event(&mut self, event: KadEvent) {
        if self.events.len() >= EVENTS_MAX {
            self.counters.events_dropped += 1;
        } else {
            self.events.push_back(event);
        }
    }

    fn send(&mut self, peer: NodeId, addr: SocketAddr, repr: &Repr) {
        self.counters.messages_out += 1;
        let bytes = repr.to_bytes();
        self.push_action(KadAction::Send { peer, addr, bytes });
    }

    fn table_changed(&mut self) {
        self.generation += 1;
        if !self.table_changed_queued {
            self.table_changed_queued = true;
            self.push_event(KadEvent::TableChanged);
        }
    }

    /// Whether we await an answer from `peer` (a ping or a lookup request).
    fn awaits(&self, peer: &NodeId) -> bool {
        self.pings.iter().any(|p| p.peer == *peer) || self.lookups.iter().any(|l| l.awaits(peer))
    }

    /// `peer` proved to be alive at `now`. Returns true if a subnet limit
    /// rejected it.
    fn observe(&mut self, now: Instant, peer: NodeId, addr: SocketAddr) -> bool {
        self.pings.retain(|p| p.peer != peer);
        match self.table.insert(peer, addr, now) {
            Insert::Added => {
                self.counters.contacts_added += 1;
                self.table_changed();
                false
            }
            Insert::Updated { addr_changed } => {
                if addr_changed {
                    self.table_changed();
                }
                false
            }
            Insert::Pending { lrs } => {
                // Long-lived contacts stay; the newcomer waits in the
                // replacement cache unless the oldest contact fails a ping.
                if now.saturating_duration_since(lrs.last_seen) >= self.config.recently_seen {
                    self.ping(now, lrs.id, lrs.addr);
                }
                false
            }
            Insert::RejectedSubnet => {
                self.counters.subnet_rejected += 1;
                true
            }
            Insert::RejectedSelf => false,
        }
    }

    fn ping(&mut self, now: Instant, peer: NodeId, addr: SocketAddr) {
        if self.pings.iter().any(|p| p.peer == peer) || self.pings.len() >= PINGS_MAX {
            return;
        }
        self.send_ping(
            now,
            Ping {
                peer,
                addr,
                request_id: 0,
                deadline: now,
                attempts: 0,
            },
        );
    }

    fn send_ping(&mut self, now: Instant, mut ping: Ping) {
        ping.request_id = self.request_id();
        ping.deadline = now + self.config.request_timeout;
        ping.attempts += 1;
        self.counters.pings_sent += 1;
        self.send(
            ping.peer,
            ping.addr,
            &Repr::Ping {
                request_id: ping.request_id,
            },
        );
        self.pings.push(ping);
    }

    /// A ping attempt went unanswered: retry, or evict the contact.
    fn ping_failed(&mut self, now: Instant, ping: Ping) {
        if !self.table.contains(&ping.peer) {
            return;
        }
        if ping.attempts < self.config.request_attempts {
            self.send_ping(now, ping);
        } else {
            self.remove_contact(now, &ping.peer, true);
            self.fail_peer(now, &ping.peer);
        }
    }

    /// Removes `peer` from the table or replacement cache; `evict` when a
    /// ping failed (then the session is closed too).
    fn remove_contact(&mut self, now: Instant, peer: &NodeId, evict: bool) {
        let was_empty = self.table.is_empty();
        let removed = self.table.remove(peer);
        if removed.contact {
            if evict {
                self.counters.evictions += 1;
                self.push_action(KadAction::Disconnect { peer: *peer });
            } else {
                self.counters.contacts_lost += 1;
            }
            if removed.promoted.is_some() {
                self.counters.contacts_added += 1;
            }
            self.table_changed();
        }
        if !was_empty && self.table.is_empty() {
            self.rebootstrap(now);
        }
    }

    /// `peer` will not answer: fail it in every lookup.
    fn fail_peer(&mut self, now: Instant, peer: &NodeId) {
        let mut any = false;
        for lookup in &mut self.lookups {
            any |= lookup.fail_peer(peer);
        }
        if any {
            self.advance_all(now);
        }
    }

    fn connect(&mut self, now: Instant, addr: SocketAddr, expect: Option<NodeId>, bootstrap: bool) {
        if expect == Some(self.local) || self.connects.iter().any(|c| c.addr == addr) {
            return;
        }
        if self.connects.len() >= self.config.connects_in_flight_max {
            self.counters.connects_deferred += 1;
            if bootstrap && self.bootstrap_queue.len() < SEEDS_MAX + KNOWN_MAX {
                self.bootstrap_queue.push_back((addr, expect));
            }
            return;
        }
        self.counters.connects_started += 1;
        self.connects.push(PendingConnect {
            addr,
            expect,
            deadline: now + self.config.connect_timeout,
            bootstrap,
        });
        self.push_action(KadAction::Connect { addr, expect });
    }

    /// Starts queued bootstrap connects while slots are free.
    fn pump_bootstrap(&mut self, now: Instant) {
        while self.connects.len() < self.config.connects_in_flight_max {
            let Some((addr, expect)) = self.bootstrap_queue.pop_front() else {
                break;
            };
            if expect.is_some_and(|id| self.table.contains(&id)) {
                continue;
            }
            self.connect(now, addr, expect, true);
        }
    }

    /// Connects to every seed and known peer not in the table; the first
    /// that connects gets a healing self-lookup (see `handle_connected`):
    /// heals a fragmented network, refills an empty table.
    fn rebootstrap(&mut self, now: Instant) {
        self.next_rebootstrap = Some(now + self.config.rebootstrap_interval);
        self.counters.rebootstraps += 1;
        self.bootstrap_queue.clear();
        for seed in &self.seeds {
            if !seed.id.is_some_and(|id| self.table.contains(&id)) {
                self.bootstrap_queue.push_back((seed.addr, None));
            }
        }
        for (id, addr) in &self.known {
            if !self.table.contains(id) {
                self.bootstrap_queue.push_back((*addr, Some(*id)));
            }
        }
        self.bootstrap_lookup_pending = !self.bootstrap_queue.is_empty();
        self.pump_bootstrap(now);
    }

    /// Refreshes buckets (up to one past the deepest non-empty one) that saw
    /// no lookup for `refresh_interval`.
    fn refresh(&mut self, now: Instant) {
        let interval = self.config.refresh_interval;
        let mut next = now + interval;
        if let Some(deepest) = self.table.deepest() {
            let started = self.started.unwrap_or(now);
            let last = (deepest + 1).min(buckets::BUCKETS - 1);
            for b in 0..=last {
                let due = self.table.last_lookup(b).unwrap_or(started) + interval;
                if due > now {
                    next = next.min(due);
                    continue;
                }
                let target = self.rng.id_in_bucket(&self.local, b);
                if self.start_maintenance(now, target, Seeding::Table) {
                    self.counters.refreshes += 1;
                } else {
                    // All maintenance slots busy: try again shortly.
                    next = next.min(now + self.config.request_timeout);
                }
            }
        }
        self.next_refresh = Some(next);
    }

    fn start_maintenance(&mut self, now: Instant, target: NodeId, seeding: Seeding) -> bool {
        let running = self
            .lookups
            .iter()
            .filter(|l| l.purpose == Purpose::Maintenance)
            .count();
        if running >= MAINTENANCE_LOOKUPS_MAX {
            return false;
        }
        self.begin_lookup(now, target, Purpose::Maintenance, seeding);
        true
    }

    fn begin_lookup(
        &mut self,
        now: Instant,
        target: NodeId,
        purpose: Purpose,
        seeding: Seeding,
    ) -> LookupId {
        let id = LookupId(self.next_lookup_id);
        self.next_lookup_id += 1;
        self.counters.lookups_started += 1;
        // The log facade only: no I/O here unless the shell installs a logger.
        log::debug!(
            "lookup {} of {} started ({purpose:?}, {} contact(s) in the table)",
            id.0,
            target.short(),
            self.table.len()
        );
        let k = self.config.k;
        // 4k + alpha candidates: room for k closest plus failures, and
        // always more than the alpha requests in flight plus one forced.
        let mut lookup = Lookup::new(
            id,
            target,
            purpose,
            4 * k + self.config.alpha,
            LOOKUP_QUERIED_MAX,
        );
        for c in self.table.closest(&target, k) {
            match seeding {
                Seeding::Table => lookup.add(&self.local, c.id, c.addr, 1),
                Seeding::Heal(..) => lookup.add_known(&self.local, c.id, c.addr),
            }
        }
        if let Seeding::Heal(peer, addr) = seeding {
            lookup.add_forced(&self.local, peer, addr);
        }
        if let Some(b) = self.table.bucket_index(&target) {
            self.table.touch(b, now);
        }
        self.lookups.push(lookup);
        self.advance(now, self.lookups.len() - 1);
        self.finish_done(now);
        id
    }

    /// A NODES reply: feed the lookup that asked, connect to newcomers that
    /// fit the table.
    fn on_nodes(&mut self, now: Instant, peer: NodeId, request_id: u64, contacts: &[kad::Contact]) {
        let Some((index, depth)) = self
            .lookups
            .iter_mut()
            .enumerate()
            .find_map(|(i, l)| l.on_reply(&peer, request_id).map(|d| (i, d)))
        else {
            self.counters.responses_unsolicited += 1;
            return;
        };
        for contact in contacts {
            let ip = contact.addr.ip();
            if contact.id == self.local
                || ip.is_unspecified()
                || ip.is_multicast()
                || contact.addr.port() == 0
            {
                self.counters.contacts_invalid += 1;
                continue;
            }
            self.lookups[index].add(&self.local, contact.id, contact.addr, depth + 1);
            if self.table.has_room_for(&contact.id, &contact.addr) {
                self.connect(now, contact.addr, Some(contact.id), false);
            }
        }
        self.advance(now, index);
        self.finish_done(now);
    }

    /// A self-lookup explored every bucket at least as deep as the farthest
    /// of the k closest live nodes it knows: those need no refresh. One that
    /// got no answer at all (lost datagrams while joining, say) is retried
    /// shortly, a few times.
    fn self_lookup_done(&mut self, now: Instant, kth_live: Option<NodeId>) {
        match kth_live {
            Some(farthest) => {
                self.self_lookup_retries = 0;
                if let Some(from) = self.table.bucket_index(&farthest) {
                    for b in from..buckets::BUCKETS {
                        self.table.touch(b, now);
                    }
                }
            }
            None if !self.table.is_empty()
                && self.self_lookup_retries < SELF_LOOKUP_RETRIES_MAX =>
            {
                self.self_lookup_retries += 1;
                self.self_lookup_retry_at = Some(now + self.config.request_timeout);
            }
            None => {}
        }
    }

    /// Sends as many FIND_NODE as lookup `index` may have in flight.
    fn advance(&mut self, now: Instant, index: usize) {
        let (k, alpha) = (self.config.k, self.config.alpha);
        let deadline = now + self.config.request_timeout;
        let target = self.lookups[index].target;
        // Each pass puts one more request in flight; alpha bounds them.
        for _ in 0..alpha {
            let request_id = self.next_request_id.wrapping_add(1);
            let Some((peer, addr)) = self.lookups[index].poll_query(k, alpha, request_id, deadline)
            else {
                break;
            };
            self.next_request_id = request_id;
            self.send(peer, addr, &Repr::FindNode { request_id, target });
        }
    }

    fn advance_all(&mut self, now: Instant) {
        for index in 0..self.lookups.len() {
            self.advance(now, index);
        }
        self.finish_done(now);
    }

    /// Removes finished lookups, reporting user lookups.
    fn finish_done(&mut self, now: Instant) {
        let (k, alpha) = (self.config.k, self.config.alpha);
        let mut i = 0;
        while i < self.lookups.len() {
            if !self.lookups[i].is_done(k, alpha) {
                i += 1;
                continue;
            }
            let lookup = self.lookups.remove(i);
            self.counters.lookups_done += 1;
            log::debug!(
                "lookup {} of {} done: {} node(s) queried in {} round(s)",
                lookup.id.0,
                lookup.target.short(),
                lookup.queried,
                lookup.rounds()
            );
            if lookup.target == self.local {
                self.self_lookup_done(now, lookup.kth_live(k));
            }
            if lookup.purpose == Purpose::User {
                self.push_event(KadEvent::LookupDone {
                    id: lookup.id,
                    target: lookup.target,
                    closest: lookup.result(k),
                    queried: lookup.queried,
                    rounds: lookup.rounds(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
