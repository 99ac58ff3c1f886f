//! Loads the XDP program (`ebpf/xorlay.bpf.c`, compiled by `build.rs` and
//! embedded here), attaches it to the underlay interfaces, reads its per-CPU
//! counters and keeps its neighbor allowlist.
//!
//! The program validates overlay packets on the configured UDP port and drops
//! malformed ones by reason; then it drops data packets whose source IP
//! address is not in the `xorlay_neighbors` map (control packets always pass:
//! strangers must be able to handshake) and meters HANDSHAKE_1 packets (per
//! source IP and globally) and data per neighbor with token buckets. Data
//! packets for other nodes whose destination has a valid entry in the route
//! cache (`xorlay_routes`) are forwarded in XDP (`XDP_TX`/`XDP_REDIRECT`) or
//! dropped (negative entry, hop limit); the rest go to the workers. Every
//! frame it sees increments exactly one counter of the `xorlay_stats` map,
//! indexed by the `XORLAY_XDP_*` constants of `ebpf/consts.h` ([`consts`]).
//! `docs/xdp.md` documents the maps, counters and policies.
//!
//! [`load`] and [`load_with`] give a loaded, unattached program (the fixture
//! tests run it with `BPF_PROG_TEST_RUN`) with the default runtime
//! configuration ([`RateLimits::default`], [`DEFAULT_IDLE_TIMEOUT`]);
//! [`XdpRouter`] owns a loaded program and its attachments, and detaches them
//! all when dropped. The allowlist is a [`NeighborMap`], taken out of the
//! loaded object ([`XdpRouter::take_neighbor_map`], [`take_neighbor_map`]) so
//! the control thread owns it apart from the counters; [`NeighborMap::sync`]
//! makes it equal to the set of neighbors with an authenticated session. The
//! route cache and the runtime configuration (local ID, rate limits, idle
//! timeout) are a [`RouteCache`], taken out the same way
//! ([`XdpRouter::take_route_cache`], [`take_route_cache`]).
//!
//! [`XdpRouter::attach_pinned`] keeps the maps and the XDP links in a bpffs
//! pin directory so a new instance takes over a running one (hot restart) or
//! reclaims a crashed one's state; `docs/xdp.md`, "Lifecycle".
//!
//! The code is split by role: `error` (errors), `abi` (the structs shared
//! with C), `load`, `counters`, `neighbors`, `limits`, `routes` (route
//! cache and egress ports), `shed`, `clock`, `attach` ([`XdpRouter`]),
//! `pins` (the pin directory) and `takeover` (hot restart).

pub mod abi;
mod attach;
mod clock;
mod counters;
mod error;
mod limits;
mod load;
mod neighbors;
mod pins;
mod routes;
mod shed;
mod takeover;

use std::time::Duration;

pub use abi::NeighborKey;
pub(crate) use attach::if_index;
pub use attach::{XdpRouter, check_capabilities};
pub use clock::clock_step_ns;
pub use counters::{XdpCounters, read_counters};
pub use error::BpfError;
pub use load::{LoadOptions, load, load_with};
pub use neighbors::{NeighborMap, SyncReport, neighbor_key, take_neighbor_map};
pub use pins::{MapLayout, PINNED_MAPS, pinned_layout, pinned_owner};
pub use routes::{
    CachedRoute, RouteCache, RouteEntry, VIA_TAG_LEN, add_tx_port, take_route_cache, via_tag,
};
pub use shed::{SHED_MAP_NAME, ShedBudget, take_shed_budget};
pub use takeover::PinnedStart;

// Settings types of `crate::config`, kept at their old paths.
pub use crate::config::{RateLimit, RateLimitError, RateLimits, XdpAttachMode};

use crate::wire::consts;

/// The compiled XDP object (ELF), 8-byte aligned as aya needs it.
pub static XDP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xorlay.bpf.o"));

/// Name of the XDP program in [`XDP_OBJECT`].
pub const PROGRAM_NAME: &str = "xorlay_xdp";
/// Name of the per-CPU stats array in [`XDP_OBJECT`].
pub const STATS_MAP_NAME: &str = "xorlay_stats";
/// Name of the neighbor allowlist (hash map) in [`XDP_OBJECT`].
pub const NEIGHBORS_MAP_NAME: &str = "xorlay_neighbors";
/// Name of the route cache (LRU hash map) in [`XDP_OBJECT`].
pub const ROUTES_MAP_NAME: &str = "xorlay_routes";
/// Name of the runtime configuration (array map, one entry) in [`XDP_OBJECT`].
pub const CONFIG_MAP_NAME: &str = "xorlay_config";
/// Name of the egress device map (DEVMAP_HASH keyed by ifindex) in
/// [`XDP_OBJECT`].
pub const TX_PORTS_MAP_NAME: &str = "xorlay_tx_ports";
/// Name of the owner record (array map, one entry) in [`XDP_OBJECT`]: which
/// process owns the pins of a pin directory.
pub const OWNER_MAP_NAME: &str = "xorlay_owner";
/// Prefix of the pinned XDP link of each interface in a pin directory
/// (`link-<interface>`).
pub const LINK_PIN_PREFIX: &str = "link-";
/// Name of the global (in `.rodata`) that holds the overlay UDP port, in host
/// byte order.
pub const PORT_GLOBAL_NAME: &str = "xorlay_port";
/// Name of the global (in `.rodata`, a `u8`) that switches the neighbor
/// filter on (1) or off (0).
pub const FILTER_GLOBAL_NAME: &str = "xorlay_filter_neighbors";
/// Number of counters in the stats map.
pub const STAT_COUNT: usize = consts::XDP_STAT_COUNT;
/// Capacity of the neighbor allowlist (`XORLAY_NEIGHBORS_MAX`).
pub const NEIGHBORS_MAX: usize = consts::NEIGHBORS_MAX;
/// Capacity of the route cache (`XORLAY_ROUTES_MAX`); beyond it the least
/// recently used entries are evicted.
pub const ROUTES_MAX: usize = consts::ROUTES_MAX;
/// Capacity of the egress device map (`XORLAY_TX_PORTS_MAX`).
pub const TX_PORTS_MAX: usize = consts::TX_PORTS_MAX;
/// How long a route cache entry stays valid without a hit, by default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
