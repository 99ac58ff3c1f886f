//! Loads the XDP program (`ebpf/xorlay.bpf.c`, compiled by `build.rs` and
//! embedded here), attaches it to the underlay interfaces, reads its per-CPU
//! counters and keeps its neighbor allowlist.
//!
//! The program validates overlay packets on the configured UDP port and drops
//! malformed ones by reason; then it drops data packets whose source (IP, UDP
//! port) is not in the `xorlay_neighbors` map (control packets always pass:
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

use std::collections::HashSet;
use std::ffi::CString;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aya::maps::{
    Array, DevMapHash, HashMap, Map, MapData, MapType, PerCpuArray, PerCpuHashMap, PerCpuValues,
};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::{XdpLink, XdpLinkId};
use aya::programs::{ProgramError, Xdp, XdpMode};
use aya::{Ebpf, EbpfError, EbpfLoader};
use serde::{Deserialize, Serialize};

use crate::core::NodeId;
use crate::io::holder::xdp_link_holders;
use crate::io::privilege::{CapSet, whoami};
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
pub const STAT_COUNT: usize = consts::XDP_STAT_COUNT as usize;
/// Capacity of the neighbor allowlist (`XORLAY_NEIGHBORS_MAX`).
pub const NEIGHBORS_MAX: usize = consts::NEIGHBORS_MAX as usize;
/// Capacity of the route cache (`XORLAY_ROUTES_MAX`); beyond it the least
/// recently used entries are evicted.
pub const ROUTES_MAX: usize = consts::ROUTES_MAX as usize;
/// Capacity of the egress device map (`XORLAY_TX_PORTS_MAX`).
pub const TX_PORTS_MAX: usize = consts::TX_PORTS_MAX as usize;
/// How long a route cache entry stays valid without a hit, by default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

// `XdpCounters` has one field per counter; a new counter in consts.h must add
// a field (and its index below).
const _: () = assert!(STAT_COUNT == 19);
const _: () = assert!(consts::XDP_PASS_OTHER < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_PASS_OVERLAY < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_DROP_TRUNCATED < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_DROP_BAD_MAGIC < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_DROP_BAD_VERSION < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_DROP_BAD_TYPE < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_DROP_BAD_LENGTH < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_DROP_HOP_LIMIT_ZERO < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_DROP_NOT_NEIGHBOR < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_DROP_HANDSHAKE_SOURCE_RATE < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_DROP_HANDSHAKE_GLOBAL_RATE < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_DROP_NEIGHBOR_RATE < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_DROP_NO_ROUTE < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_DROP_HOP_LIMIT_EXCEEDED < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_PASS_CACHE_MISS < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_PASS_UNRESOLVED < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_FWD_TX < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_FWD_REDIRECT < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_DROP_SHED < consts::XDP_STAT_COUNT);

/// Errors of loading, attaching and reading the XDP program. Each message
/// says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// A configured interface is not in the caller's network namespace.
    #[error(
        "interface {interface} does not exist in this network namespace; check `interfaces` \
         in the config (`ip link` lists them)"
    )]
    NoSuchInterface {
        /// The interface name as configured.
        interface: String,
    },
    /// This process lacks a capability XDP needs (read from its effective
    /// set before anything is loaded).
    #[error(
        "XDP needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (root has all three); this process \
         ({user}) lacks {missing} (effective set CapEff {effective}): run xorlay as root, or \
         grant all three (systemd: AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_NET_ADMIN; \
         otherwise `setcap cap_bpf,cap_perfmon,cap_net_admin+ep` on the binary)"
    )]
    MissingCapabilities {
        /// The missing capabilities, comma-separated.
        missing: String,
        /// The effective set as read.
        effective: String,
        /// Who runs this process.
        user: String,
    },
    /// The kernel refused for lack of privileges.
    #[error(
        "{action} was refused ({detail}): xorlay needs root or CAP_BPF, CAP_PERFMON and \
         CAP_NET_ADMIN for XDP; run it as root, or grant them (systemd: \
         AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_NET_ADMIN; otherwise \
         `setcap cap_bpf,cap_perfmon,cap_net_admin+ep` on the binary)"
    )]
    PermissionDenied {
        /// What was refused.
        action: &'static str,
        /// The kernel's error.
        detail: String,
    },
    /// The kernel verifier rejected the program.
    #[error(
        "the kernel verifier rejected the XDP program ({detail}); this kernel does not accept \
         ebpf/xorlay.bpf.c as built: report it with the kernel version (`uname -r`) and this \
         verifier log:\n{verifier_log}"
    )]
    Verifier {
        /// The kernel's error.
        detail: String,
        /// The verifier's log.
        verifier_log: String,
    },
    /// The embedded object could not be loaded (maps, BTF, relocations).
    #[error(
        "cannot load the embedded XDP object: {detail}; check that the kernel has BPF and BTF \
         support (`ls /sys/kernel/btf/vmlinux`) and, before Linux 5.11, enough locked memory \
         (`ulimit -l`); rebuild xorlay if the object itself is broken"
    )]
    Object {
        /// The loader's error, with its causes.
        detail: String,
    },
    /// The embedded object lacks a program or map this code expects.
    #[error(
        "the embedded XDP object has no {kind} `{name}`; ebpf/xorlay.bpf.c and \
         router/src/io/bpf.rs disagree: rebuild xorlay from one source tree"
    )]
    MissingObject {
        /// "program" or "map".
        kind: &'static str,
        /// Its name.
        name: &'static str,
    },
    /// Native (driver) mode attach failed.
    #[error(
        "cannot attach XDP in native mode to {interface}: {detail}; the driver may not support \
         native XDP: set xdp_mode = \"generic\" or \"auto\" under [underlay] in the config"
    )]
    NativeAttach {
        /// The interface.
        interface: String,
        /// The kernel's error.
        detail: String,
    },
    /// The interface already has an XDP program.
    #[error(
        "cannot attach XDP in {mode} mode to {interface}: {detail}; another XDP program is \
         attached to it (`ip link show {interface}` shows it; `ip link set dev {interface} \
         xdp off` removes it if nothing else needs it)"
    )]
    InterfaceBusy {
        /// The interface.
        interface: String,
        /// "native" or "generic".
        mode: &'static str,
        /// The kernel's error.
        detail: String,
    },
    /// Another xorlay holds the interface's XDP link.
    #[error(
        "XDP on {interface} is held by another xorlay router, {holder}; two routers cannot \
         share an interface: stop that one first (`kill {pid}`, or `systemctl stop xorlay`), \
         or, to replace it without losing packets, give both the same [xdp] pin_dir (a hot \
         restart)"
    )]
    InterfaceHeld {
        /// The interface.
        interface: String,
        /// The holder, "xorlay (pid N)".
        holder: String,
        /// Its pid.
        pid: u32,
    },
    /// Attaching failed otherwise.
    #[error(
        "cannot attach XDP in {mode} mode to {interface}: {detail}; `ip -d link show \
         {interface}` shows the device and any XDP program on it"
    )]
    Attach {
        /// The interface.
        interface: String,
        /// "native" or "generic".
        mode: &'static str,
        /// The kernel's error.
        detail: String,
    },
    /// Reading the stats map failed.
    #[error(
        "cannot read the XDP counters from map `xorlay_stats`: {detail}; the program may have \
         been unloaded, restart xorlay"
    )]
    Counters {
        /// The map error, with its causes.
        detail: String,
    },
    /// Reading or updating the neighbor allowlist failed.
    #[error(
        "cannot {action} the XDP neighbor allowlist (map `xorlay_neighbors`): {detail}; data \
         from neighbors missing in it is dropped until a sync succeeds (each sync starts from \
         the map's actual contents); if this persists, restart xorlay"
    )]
    NeighborMap {
        /// "read", "update" or "open".
        action: &'static str,
        /// The map error, with its causes.
        detail: String,
    },
    /// Reading or updating the route cache or the runtime configuration
    /// failed.
    #[error(
        "cannot {action} the XDP route cache (map `{map}`): {detail}; data packets without a \
         valid entry take the userspace path, so forwarding goes on, slower; if this persists, \
         restart xorlay"
    )]
    RouteCache {
        /// "read", "update" or "open".
        action: &'static str,
        /// `xorlay_routes` or `xorlay_config`.
        map: &'static str,
        /// The map error, with its causes.
        detail: String,
    },
    /// A route the fast path cannot use.
    #[error(
        "cannot install the route via {next_hop} from {local} in the XDP route cache: {reason}"
    )]
    InvalidRoute {
        /// The next hop asked for.
        next_hop: SocketAddr,
        /// The source address asked for.
        local: SocketAddr,
        /// What is wrong with them.
        reason: &'static str,
    },
    /// A rate limit with a rate but no burst.
    #[error(
        "XDP rate limit {name}: {pps} packets/s with a burst of {burst}: a nonzero rate needs a \
         burst of at least 1 (a rate of 0 turns the limit off)"
    )]
    InvalidRateLimit {
        /// Which limit.
        name: &'static str,
        /// Its rate.
        pps: u32,
        /// Its burst.
        burst: u32,
    },
    /// An interface could not be added to the egress device map.
    #[error(
        "cannot add {interface} (ifindex {if_index}) to the XDP egress map `xorlay_tx_ports`: \
         {detail}; the fast path cannot redirect to it (such packets take the userspace path)"
    )]
    TxPort {
        /// The interface.
        interface: String,
        /// Its index.
        if_index: u32,
        /// The map error, with its causes.
        detail: String,
    },
    /// The pin directory (`[xdp] pin_dir`) cannot be used.
    #[error("XDP pin directory {path}: {detail}")]
    Pin {
        /// The directory or the entry in it.
        path: PathBuf,
        /// What went wrong and what to do.
        detail: String,
    },
    /// More neighbors than the allowlist holds.
    #[error(
        "{count} neighbors exceed the XDP neighbor allowlist's capacity of {limit} \
         (XORLAY_NEIGHBORS_MAX in ebpf/consts.h); the allowlist was left unchanged: limit the \
         number of sessions below it, or raise XORLAY_NEIGHBORS_MAX and rebuild xorlay"
    )]
    TooManyNeighbors {
        /// Distinct neighbor addresses asked for.
        count: usize,
        /// [`NEIGHBORS_MAX`].
        limit: usize,
    },
}

impl BpfError {
    /// Classifies an error of `EbpfLoader::load` (BTF, maps, relocations).
    fn from_object(error: &EbpfError) -> BpfError {
        if chain_errno(error) == Some(libc::EPERM) {
            return BpfError::PermissionDenied {
                action: "creating the XDP program's maps",
                detail: chain(error),
            };
        }
        BpfError::Object {
            detail: chain(error),
        }
    }

    /// Classifies an error of `Xdp::load` (BPF_PROG_LOAD).
    fn from_program_load(error: &ProgramError) -> BpfError {
        if chain_errno(error) == Some(libc::EPERM) {
            return BpfError::PermissionDenied {
                action: "loading the XDP program",
                detail: chain(error),
            };
        }
        match error {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => BpfError::Verifier {
                detail: io_error.to_string(),
                verifier_log: verifier_log.to_string(),
            },
            other => BpfError::Object {
                detail: chain(other),
            },
        }
    }

    /// Classifies an error of `Xdp::attach_to_if_index`.
    fn from_attach(
        error: &ProgramError,
        interface: &str,
        if_index: u32,
        mode: AttachedMode,
    ) -> BpfError {
        let detail = chain(error);
        let interface = interface.to_string();
        match chain_errno(error) {
            Some(libc::EBUSY | libc::EEXIST) => {
                let holders = xdp_link_holders(if_index);
                if let Some(router) = holders.iter().find(|h| h.is_xorlay()) {
                    return BpfError::InterfaceHeld {
                        interface,
                        holder: router.to_string(),
                        pid: router.pid,
                    };
                }
                BpfError::InterfaceBusy {
                    interface,
                    mode: mode.name(),
                    detail,
                }
            }
            Some(libc::EPERM) => BpfError::PermissionDenied {
                action: "attaching the XDP program",
                detail,
            },
            _ if mode == AttachedMode::Native => BpfError::NativeAttach { interface, detail },
            _ => BpfError::Attach {
                interface,
                mode: mode.name(),
                detail,
            },
        }
    }
}

/// How the XDP program is attached (`xdp_mode` in the config).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpAttachMode {
    /// In the driver (fastest); fails where the driver has no XDP support.
    #[default]
    Native,
    /// In the generic network stack (works everywhere, slower).
    Generic,
    /// Native per interface, falling back to generic with a warning.
    Auto,
}

impl XdpAttachMode {
    /// The config spelling.
    pub const fn name(self) -> &'static str {
        match self {
            XdpAttachMode::Native => "native",
            XdpAttachMode::Generic => "generic",
            XdpAttachMode::Auto => "auto",
        }
    }
}

impl fmt::Display for XdpAttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The mode an attachment actually got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttachedMode {
    Native,
    Generic,
}

impl AttachedMode {
    const fn name(self) -> &'static str {
        match self {
            AttachedMode::Native => "native",
            AttachedMode::Generic => "generic",
        }
    }

    const fn aya(self) -> XdpMode {
        match self {
            AttachedMode::Native => XdpMode::Driver,
            AttachedMode::Generic => XdpMode::Skb,
        }
    }
}

/// The XDP counters summed over all CPUs; one field per `XORLAY_XDP_*`
/// counter of `ebpf/consts.h`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct XdpCounters {
    /// Passed untouched: not UDP to the overlay port.
    pub pass_other: u64,
    /// Passed: well-formed overlay packets.
    pub pass_overlay: u64,
    /// Dropped: UDP payload shorter than the overlay header, or a UDP length
    /// beyond the frame.
    pub drop_truncated: u64,
    /// Dropped: bad magic.
    pub drop_bad_magic: u64,
    /// Dropped: unknown version.
    pub drop_bad_version: u64,
    /// Dropped: unknown packet type.
    pub drop_bad_type: u64,
    /// Dropped: payload length disagrees with the UDP length.
    pub drop_bad_length: u64,
    /// Dropped: hop limit 0.
    pub drop_hop_limit_zero: u64,
    /// Dropped: a data packet from a source (IP, UDP port) that is not in
    /// the neighbor allowlist.
    pub drop_not_neighbor: u64,
    /// Dropped: a HANDSHAKE_1 over its source IP's token bucket.
    pub drop_handshake_source_rate: u64,
    /// Dropped: a HANDSHAKE_1 over the global handshake token bucket.
    pub drop_handshake_global_rate: u64,
    /// Dropped: a data packet over its neighbor's token bucket.
    pub drop_neighbor_rate: u64,
    /// Dropped: a data packet whose destination has a negative route cache
    /// entry (no route).
    pub drop_no_route: u64,
    /// Dropped: a route cache hit with hop limit 1.
    pub drop_hop_limit_exceeded: u64,
    /// Passed: a data packet for another node without a valid route cache
    /// entry (the workers decide).
    pub pass_cache_miss: u64,
    /// Passed untouched: a valid route cache entry the fast path could not
    /// finish (no FIB route or neighbor entry, MTU, VLAN tag, IPv4 options,
    /// egress interface not attached, ...).
    pub pass_unresolved: u64,
    /// Forwarded by the fast path out of the ingress interface (`XDP_TX`).
    pub fwd_tx: u64,
    /// Forwarded by the fast path to another attached interface
    /// (`XDP_REDIRECT`).
    pub fwd_redirect: u64,
    /// Dropped: a data packet for the workers over the shedding budget the
    /// router sets while its workers' sockets overflow.
    pub drop_shed: u64,
}

impl XdpCounters {
    /// The counters from an array indexed by `XORLAY_XDP_*`.
    pub const fn from_array(values: &[u64; STAT_COUNT]) -> XdpCounters {
        XdpCounters {
            pass_other: values[consts::XDP_PASS_OTHER as usize],
            pass_overlay: values[consts::XDP_PASS_OVERLAY as usize],
            drop_truncated: values[consts::XDP_DROP_TRUNCATED as usize],
            drop_bad_magic: values[consts::XDP_DROP_BAD_MAGIC as usize],
            drop_bad_version: values[consts::XDP_DROP_BAD_VERSION as usize],
            drop_bad_type: values[consts::XDP_DROP_BAD_TYPE as usize],
            drop_bad_length: values[consts::XDP_DROP_BAD_LENGTH as usize],
            drop_hop_limit_zero: values[consts::XDP_DROP_HOP_LIMIT_ZERO as usize],
            drop_not_neighbor: values[consts::XDP_DROP_NOT_NEIGHBOR as usize],
            drop_handshake_source_rate: values[consts::XDP_DROP_HANDSHAKE_SOURCE_RATE as usize],
            drop_handshake_global_rate: values[consts::XDP_DROP_HANDSHAKE_GLOBAL_RATE as usize],
            drop_neighbor_rate: values[consts::XDP_DROP_NEIGHBOR_RATE as usize],
            drop_no_route: values[consts::XDP_DROP_NO_ROUTE as usize],
            drop_hop_limit_exceeded: values[consts::XDP_DROP_HOP_LIMIT_EXCEEDED as usize],
            pass_cache_miss: values[consts::XDP_PASS_CACHE_MISS as usize],
            pass_unresolved: values[consts::XDP_PASS_UNRESOLVED as usize],
            fwd_tx: values[consts::XDP_FWD_TX as usize],
            fwd_redirect: values[consts::XDP_FWD_REDIRECT as usize],
            drop_shed: values[consts::XDP_DROP_SHED as usize],
        }
    }

    /// The counters as an array indexed by `XORLAY_XDP_*`.
    pub const fn to_array(&self) -> [u64; STAT_COUNT] {
        let mut values = [0u64; STAT_COUNT];
        values[consts::XDP_PASS_OTHER as usize] = self.pass_other;
        values[consts::XDP_PASS_OVERLAY as usize] = self.pass_overlay;
        values[consts::XDP_DROP_TRUNCATED as usize] = self.drop_truncated;
        values[consts::XDP_DROP_BAD_MAGIC as usize] = self.drop_bad_magic;
        values[consts::XDP_DROP_BAD_VERSION as usize] = self.drop_bad_version;
        values[consts::XDP_DROP_BAD_TYPE as usize] = self.drop_bad_type;
        values[consts::XDP_DROP_BAD_LENGTH as usize] = self.drop_bad_length;
        values[consts::XDP_DROP_HOP_LIMIT_ZERO as usize] = self.drop_hop_limit_zero;
        values[consts::XDP_DROP_NOT_NEIGHBOR as usize] = self.drop_not_neighbor;
        values[consts::XDP_DROP_HANDSHAKE_SOURCE_RATE as usize] = self.drop_handshake_source_rate;
        values[consts::XDP_DROP_HANDSHAKE_GLOBAL_RATE as usize] = self.drop_handshake_global_rate;
        values[consts::XDP_DROP_NEIGHBOR_RATE as usize] = self.drop_neighbor_rate;
        values[consts::XDP_DROP_NO_ROUTE as usize] = self.drop_no_route;
        values[consts::XDP_DROP_HOP_LIMIT_EXCEEDED as usize] = self.drop_hop_limit_exceeded;
        values[consts::XDP_PASS_CACHE_MISS as usize] = self.pass_cache_miss;
        values[consts::XDP_PASS_UNRESOLVED as usize] = self.pass_unresolved;
        values[consts::XDP_FWD_TX as usize] = self.fwd_tx;
        values[consts::XDP_FWD_REDIRECT as usize] = self.fwd_redirect;
        values[consts::XDP_DROP_SHED as usize] = self.drop_shed;
        values
    }

    /// The counter with index `stat_index` (an `XORLAY_XDP_*` constant, e.g.
    /// [`crate::wire::OverlayError::xdp_stat`]); 0 for an unknown index.
    pub fn get(&self, stat_index: u32) -> u64 {
        usize::try_from(stat_index)
            .ok()
            .and_then(|index| self.to_array().get(index).copied())
            .unwrap_or(0)
    }

    /// All drops, whatever the reason.
    pub const fn dropped(&self) -> u64 {
        self.drop_truncated
            .wrapping_add(self.drop_bad_magic)
            .wrapping_add(self.drop_bad_version)
            .wrapping_add(self.drop_bad_type)
            .wrapping_add(self.drop_bad_length)
            .wrapping_add(self.drop_hop_limit_zero)
            .wrapping_add(self.drop_not_neighbor)
            .wrapping_add(self.drop_handshake_source_rate)
            .wrapping_add(self.drop_handshake_global_rate)
            .wrapping_add(self.drop_neighbor_rate)
            .wrapping_add(self.drop_no_route)
            .wrapping_add(self.drop_hop_limit_exceeded)
            .wrapping_add(self.drop_shed)
    }

    /// Packets the fast path forwarded, `XDP_TX` and `XDP_REDIRECT`.
    pub const fn forwarded(&self) -> u64 {
        self.fwd_tx.wrapping_add(self.fwd_redirect)
    }

    /// Valid overlay packets passed to the workers, whatever the reason.
    pub const fn passed_to_workers(&self) -> u64 {
        self.pass_overlay
            .wrapping_add(self.pass_cache_miss)
            .wrapping_add(self.pass_unresolved)
    }
}

/// How the program is loaded, beyond its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Run the filter step (default): drop data packets whose source is not
    /// in the neighbor allowlist, and apply the rate limits. Off, the
    /// program validates only (and uses the route cache once it has a local
    /// ID): for tests of validation alone and for debugging.
    pub filter_neighbors: bool,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            filter_neighbors: true,
        }
    }
}

/// Loads [`XDP_OBJECT`] with the overlay UDP port `port`, the neighbor filter
/// on, and loads the program into the kernel (verifier included), without
/// attaching it. Same as [`load_with`] and [`LoadOptions::default`].
pub fn load(port: u16) -> Result<Ebpf, BpfError> {
    load_with(port, LoadOptions::default())
}

/// Loads [`XDP_OBJECT`] with the overlay UDP port `port` and `options` and
/// loads the program into the kernel (verifier included), without attaching
/// it. The neighbor allowlist starts empty: with the filter on, no data
/// packet passes until it is filled ([`NeighborMap::sync`]). The runtime
/// configuration gets its defaults ([`RateLimits::default`],
/// [`DEFAULT_IDLE_TIMEOUT`], generation 1) and no local ID: the route cache
/// is not consulted until [`RouteCache::set_local_id`].
pub fn load_with(port: u16, options: LoadOptions) -> Result<Ebpf, BpfError> {
    load_inner(port, options, None)
}

/// [`load_with`], with the state maps ([`PINNED_MAPS`]) opened from or
/// pinned in `pin_dir` when given. A reused `xorlay_config` keeps its value
/// (generation included: cached routes stay valid); a new one gets the
/// defaults.
fn load_inner(port: u16, options: LoadOptions, pin_dir: Option<&Path>) -> Result<Ebpf, BpfError> {
    let filter = u8::from(options.filter_neighbors);
    let pin_paths: Vec<(&str, PathBuf)> = match pin_dir {
        Some(dir) => PINNED_MAPS
            .iter()
            .map(|layout| (layout.name, dir.join(layout.name)))
            .collect(),
        None => Vec::new(),
    };
    let reuse_config = pin_dir.is_some_and(|dir| dir.join(CONFIG_MAP_NAME).exists());
    let mut loader = EbpfLoader::new();
    loader
        .override_global(PORT_GLOBAL_NAME, &port, true)
        .override_global(FILTER_GLOBAL_NAME, &filter, true);
    for (name, path) in &pin_paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader
        .load(XDP_OBJECT)
        .map_err(|e| BpfError::from_object(&e))?;
    // Before the program can run anywhere.
    if !reuse_config {
        write_default_config(&mut ebpf)?;
    }
    xdp_program(&mut ebpf)?
        .load()
        .map_err(|e| BpfError::from_program_load(&e))?;
    Ok(ebpf)
}

/// Reads the stats map of a program from [`load`] and sums every counter
/// over the CPUs.
pub fn read_counters(ebpf: &Ebpf) -> Result<XdpCounters, BpfError> {
    let map = ebpf.map(STATS_MAP_NAME).ok_or(BpfError::MissingObject {
        kind: "map",
        name: STATS_MAP_NAME,
    })?;
    let stats = PerCpuArray::<&MapData, u64>::try_from(map)
        .map_err(|e| BpfError::Counters { detail: chain(&e) })?;
    let mut totals = [0u64; STAT_COUNT];
    for (index, total) in (0u32..).zip(totals.iter_mut()) {
        let per_cpu = stats
            .get(&index, 0)
            .map_err(|e| BpfError::Counters { detail: chain(&e) })?;
        *total = per_cpu.iter().fold(0u64, |sum, v| sum.wrapping_add(*v));
    }
    Ok(XdpCounters::from_array(&totals))
}

/// A key of the neighbor allowlist: `struct xorlay_neighbor_key` of
/// `ebpf/maps.h`, whose layout the asserts below pin to the
/// `XORLAY_NEIGHBOR_KEY_*` constants. IPv4 sources are stored as v4-mapped
/// IPv6 addresses (`::ffff:a.b.c.d`), so one key form serves both families;
/// make keys with [`neighbor_key`]. Neighbors are admitted by IP address:
/// the port is 0 in every key, since a neighbor's fast path forwards from
/// flow ports (`Packet::flow_port`), not from its overlay port.
#[repr(C, align(4))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NeighborKey {
    /// IPv6 address, or the v4-mapped form of an IPv4 address.
    addr: [u8; 16],
    /// Always 0 (kept for the layout the kernel program shares).
    port: [u8; 2],
    /// Always 0: the kernel hashes every key byte.
    pad: u16,
}

const _: () = assert!(size_of::<NeighborKey>() == consts::NEIGHBOR_KEY_LEN as usize);
// Like the C struct (`__attribute__((aligned(4)))`; its size is what the
// kernel checks, this keeps the two identical).
const _: () = assert!(align_of::<NeighborKey>() == 4);
const _: () =
    assert!(std::mem::offset_of!(NeighborKey, addr) == consts::NEIGHBOR_KEY_OFF_ADDR as usize);
const _: () =
    assert!(std::mem::offset_of!(NeighborKey, port) == consts::NEIGHBOR_KEY_OFF_PORT as usize);
const _: () =
    assert!(std::mem::offset_of!(NeighborKey, pad) == consts::NEIGHBOR_KEY_OFF_PAD as usize);

// SAFETY: `#[repr(C)]`, plain integer arrays and an integer, no implicit
// padding (the asserts above: 16 + 2 + 2 = 20 bytes, a multiple of the
// alignment), so every bit pattern is a valid value and the struct can be
// copied to and from the kernel.
unsafe impl aya::Pod for NeighborKey {}

impl NeighborKey {
    /// The address as stored: IPv6, IPv4 in its v4-mapped form.
    pub fn ip(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.addr)
    }

    /// The UDP port, host order.
    pub fn port(&self) -> u16 {
        u16::from_be_bytes(self.port)
    }

    /// The key a build before flow ports wrote for a neighbor at `addr`:
    /// its IP and UDP port. For tests of the upgrade
    /// ([`NeighborMap::add_ip_keys`]); this build never writes one.
    pub fn with_port(addr: &SocketAddr) -> NeighborKey {
        NeighborKey {
            port: addr.port().to_be_bytes(),
            ..neighbor_key(addr)
        }
    }

    /// The address in the underlay's own form: a v4-mapped address as IPv4
    /// (like `topology::canonical`).
    pub fn socket_addr(&self) -> SocketAddr {
        let ip = self.ip();
        match ip.to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, self.port())),
            None => SocketAddr::V6(SocketAddrV6::new(ip, self.port(), 0, 0)),
        }
    }
}

/// The allowlist key of a neighbor at `addr`: its IP address alone (data
/// comes from any of its ports); IPv4 and its v4-mapped IPv6 form give the
/// same key; an IPv6 scope ID and flow label are ignored.
pub fn neighbor_key(addr: &SocketAddr) -> NeighborKey {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    NeighborKey {
        addr: ip.octets(),
        port: [0; 2],
        pad: 0,
    }
}

/// A neighbor's data bucket on every CPU, zeroed: full.
fn full_bucket() -> Result<PerCpuValues<u64>, BpfError> {
    aya::util::nr_cpus()
        .map_err(|(_, e)| e)
        .and_then(|cpus| PerCpuValues::try_from(vec![0u64; cpus]))
        .map_err(|e| BpfError::NeighborMap {
            action: "update",
            detail: format!("per-CPU values: {e}"),
        })
}

/// What [`NeighborMap::sync`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Keys added.
    pub inserted: usize,
    /// Keys deleted.
    pub removed: usize,
}

/// The neighbor allowlist of a loaded program (map `xorlay_neighbors`),
/// owned apart from the [`Ebpf`] object so that the control thread can keep
/// it while another thread reads the counters. The kernel map lives as long
/// as the program or this handle.
pub struct NeighborMap {
    /// The value is the neighbor's per-CPU data bucket (GCRA state, the
    /// program's); userspace inserts zeros (a full bucket).
    map: PerCpuHashMap<MapData, NeighborKey, u64>,
}

impl std::fmt::Debug for NeighborMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NeighborMap").finish_non_exhaustive()
    }
}

/// Takes the neighbor allowlist out of a program from [`load`] or
/// [`load_with`]; fails if it was taken before.
pub fn take_neighbor_map(ebpf: &mut Ebpf) -> Result<NeighborMap, BpfError> {
    let map = ebpf
        .take_map(NEIGHBORS_MAP_NAME)
        .ok_or(BpfError::MissingObject {
            kind: "map",
            name: NEIGHBORS_MAP_NAME,
        })?;
    let map = PerCpuHashMap::try_from(map).map_err(|e| BpfError::NeighborMap {
        action: "open",
        detail: chain(&e),
    })?;
    Ok(NeighborMap { map })
}

impl NeighborMap {
    /// A second handle on the allowlist pinned in `pin_dir` (by a router
    /// started with [`XdpRouter::attach_pinned`]).
    pub fn open_pinned(pin_dir: &Path) -> Result<NeighborMap, BpfError> {
        let map = open_pinned_map(pin_dir, NEIGHBORS_MAP_NAME).map_err(|detail| {
            BpfError::NeighborMap {
                action: "open",
                detail: format!("{detail} (pinned in {})", pin_dir.display()),
            }
        })?;
        Ok(NeighborMap { map })
    }

    /// Makes the allowlist equal to `wanted` (IPv4 or v4-mapped IPv6
    /// addresses alike, see [`neighbor_key`]): deletes the keys not wanted,
    /// then inserts the missing ones. The current keys are read from the map
    /// itself, so a sync is correct whatever happened before (a restart, a
    /// sync that failed half way). More than [`NEIGHBORS_MAX`] distinct
    /// addresses fail with [`BpfError::TooManyNeighbors`] before anything
    /// changes.
    pub fn sync(&mut self, wanted: &HashSet<SocketAddr>) -> Result<SyncReport, BpfError> {
        let wanted: HashSet<NeighborKey> = wanted.iter().map(neighbor_key).collect();
        if wanted.len() > NEIGHBORS_MAX {
            return Err(BpfError::TooManyNeighbors {
                count: wanted.len(),
                limit: NEIGHBORS_MAX,
            });
        }
        let current = self.keys()?;
        let update_error = |e: aya::maps::MapError| BpfError::NeighborMap {
            action: "update",
            detail: chain(&e),
        };
        let mut report = SyncReport::default();
        // Deletions first: the map never holds more than NEIGHBORS_MAX keys.
        for key in current.difference(&wanted) {
            self.map.remove(key).map_err(update_error)?;
            report.removed += 1;
        }
        for key in wanted.difference(&current) {
            // Zeroed buckets, a fresh one per insert (the map takes the
            // values by value).
            self.map
                .insert(key, full_bucket()?, 0)
                .map_err(update_error)?;
            report.inserted += 1;
        }
        Ok(report)
    }

    /// The keys in the map now, read from the kernel.
    pub fn keys(&self) -> Result<HashSet<NeighborKey>, BpfError> {
        let mut keys = HashSet::new();
        for key in self.map.keys() {
            let key = key.map_err(|e| BpfError::NeighborMap {
                action: "read",
                detail: chain(&e),
            })?;
            keys.insert(key);
            // Only this handle writes the map; more keys than it holds would
            // mean an iteration restarted by concurrent deletes: stop.
            if keys.len() > NEIGHBORS_MAX {
                return Err(BpfError::NeighborMap {
                    action: "read",
                    detail: format!("more than {NEIGHBORS_MAX} keys: modified concurrently?"),
                });
            }
        }
        Ok(keys)
    }

    /// Adds the IP key of every key that still names a port, and returns
    /// how many it added. Builds before flow ports keyed a neighbor by (IP,
    /// UDP port); a hot restart from one keeps that program running, reading
    /// those keys, until the link swap, after which this build's program looks
    /// up IP keys only. Adding the IP keys before the swap keeps both admitting
    /// every neighbor; the first exact sync removes the port keys. Stops at
    /// [`NEIGHBORS_MAX`] keys (the map's capacity).
    pub fn add_ip_keys(&mut self) -> Result<usize, BpfError> {
        let current = self.keys()?;
        let missing: HashSet<NeighborKey> = current
            .iter()
            .filter(|key| key.port != [0; 2])
            .map(|key| NeighborKey {
                port: [0; 2],
                ..*key
            })
            .filter(|key| !current.contains(key))
            .collect();
        let room = NEIGHBORS_MAX.saturating_sub(current.len());
        let mut added = 0;
        for key in missing.iter().take(room) {
            self.map
                .insert(key, full_bucket()?, 0)
                .map_err(|e| BpfError::NeighborMap {
                    action: "update",
                    detail: chain(&e),
                })?;
            added += 1;
        }
        Ok(added)
    }

    /// Whether `addr` is in the map now (read from the kernel).
    pub fn contains(&self, addr: &SocketAddr) -> Result<bool, BpfError> {
        match self.map.get(&neighbor_key(addr), 0) {
            Ok(_) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(BpfError::NeighborMap {
                action: "read",
                detail: chain(&e),
            }),
        }
    }
}

// The allowlist moves to the control thread.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<NeighborMap>();
};

/// One token bucket of the XDP program: `pps` packets per second on
/// average, `burst` at once after a quiet period. `pps` 0 turns the limit
/// off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RateLimit {
    /// Sustained rate, packets per second; 0 = unlimited.
    pub pps: u32,
    /// Bucket depth, packets; at least 1 when `pps` is not 0.
    pub burst: u32,
}

impl RateLimit {
    /// No limit.
    pub const UNLIMITED: RateLimit = RateLimit { pps: 0, burst: 0 };

    /// `pps` packets per second with bursts of `burst`.
    pub const fn new(pps: u32, burst: u32) -> RateLimit {
        RateLimit { pps, burst }
    }

    /// The limit the program can enforce with a clock that moves in steps
    /// of `step_ns`: within a step every packet sees the same time, so a
    /// bucket can refill only once per step and a burst below one step's
    /// worth of tokens (`pps x step`) would cap the rate at `burst / step`.
    /// Such a burst is raised to a step's worth; the rate stays.
    pub fn for_clock_step(self, step_ns: u64) -> RateLimit {
        if self.pps == 0 {
            return self;
        }
        let per_step = (u128::from(self.pps) * u128::from(step_ns)).div_ceil(1_000_000_000);
        let per_step = u32::try_from(per_step).unwrap_or(u32::MAX);
        RateLimit {
            pps: self.pps,
            burst: self.burst.max(per_step).max(1),
        }
    }

    fn check(self, name: &'static str) -> Result<(), BpfError> {
        if self.pps != 0 && self.burst == 0 {
            return Err(BpfError::InvalidRateLimit {
                name,
                pps: self.pps,
                burst: self.burst,
            });
        }
        Ok(())
    }
}

/// The rate limits of the XDP program's filter step (`xorlay_config`).
/// [`RateLimits::default`] documents the defaults and their reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// HANDSHAKE_1 packets from one source IP (IPv4, or a whole IPv6
    /// address).
    pub handshake_per_source: RateLimit,
    /// HANDSHAKE_1 packets from all sources together (exact across CPUs).
    pub handshake_global: RateLimit,
    /// Data packets from one neighbor (IP, UDP port), per CPU that receives
    /// its traffic (usually one: the overlay sends from a fixed port, so RSS
    /// keeps a neighbor on one queue).
    pub neighbor_data: RateLimit,
}

impl Default for RateLimits {
    /// - `handshake_per_source` 4/s, burst 8: a peer starts a session once
    ///   and retries a lost HANDSHAKE_1 after a second or more; 8 covers a
    ///   restart that reconnects several sessions from one host.
    /// - `handshake_global` 1000/s, burst 1000: each HANDSHAKE_1 costs the
    ///   responder a Noise XX message 2 (two X25519 operations and a key
    ///   generation, tens of microseconds), so a flood of spoofed sources is
    ///   held to a few percent of one core.
    /// - `neighbor_data` 1,000,000/s, burst 100,000 per CPU: about a third
    ///   of what one core relays in XDP, so one neighbor cannot take a whole
    ///   core from the others, while line-rate traffic of a 10 Gbit/s
    ///   neighbor with 1500-byte packets (830 k/s) passes. Raise it for
    ///   benchmarks above 1 M packets/s from one neighbor.
    fn default() -> RateLimits {
        RateLimits {
            handshake_per_source: RateLimit::new(4, 8),
            handshake_global: RateLimit::new(1000, 1000),
            neighbor_data: RateLimit::new(1_000_000, 100_000),
        }
    }
}

impl RateLimits {
    /// No limits at all.
    pub const UNLIMITED: RateLimits = RateLimits {
        handshake_per_source: RateLimit::UNLIMITED,
        handshake_global: RateLimit::UNLIMITED,
        neighbor_data: RateLimit::UNLIMITED,
    };

    /// Every limit as [`RateLimit::for_clock_step`] makes it.
    pub fn for_clock_step(&self, step_ns: u64) -> RateLimits {
        RateLimits {
            handshake_per_source: self.handshake_per_source.for_clock_step(step_ns),
            handshake_global: self.handshake_global.for_clock_step(step_ns),
            neighbor_data: self.neighbor_data.for_clock_step(step_ns),
        }
    }

    /// Each limit with its config key under `xdp.limits`.
    pub fn named(&self) -> [(&'static str, RateLimit); 3] {
        [
            ("handshake_per_source", self.handshake_per_source),
            ("handshake_global", self.handshake_global),
            ("neighbor_data", self.neighbor_data),
        ]
    }

    /// Each limit with a rate has a burst.
    pub fn check(&self) -> Result<(), BpfError> {
        self.named()
            .into_iter()
            .try_for_each(|(name, limit)| limit.check(name))
    }
}

/// The map of the workers' shedding budget (`struct xorlay_shed`).
pub const SHED_MAP_NAME: &str = "xorlay_shed";

/// `struct xorlay_shed` of `ebpf/maps.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct ShedValue {
    pps: u32,
    burst: u32,
}

// SAFETY: two u32, no padding: every bit pattern is valid.
unsafe impl aya::Pod for ShedValue {}

/// The budget of data packets XDP passes to the workers (map
/// `xorlay_shed`), set by the control thread while the workers' sockets
/// overflow ([`crate::core::shed::Shedder`]). The only writer of the map.
pub struct ShedBudget {
    map: Array<MapData, ShedValue>,
    current: Option<crate::core::shed::Budget>,
}

impl ShedBudget {
    /// Sets the budget (`None`: no budget, everything passes).
    pub fn set(&mut self, budget: Option<crate::core::shed::Budget>) -> Result<(), BpfError> {
        if budget == self.current {
            return Ok(());
        }
        let value = budget.map_or(ShedValue::default(), |b| {
            let limit = RateLimit::new(b.pps, b.burst).for_clock_step(clock_step_ns());
            ShedValue {
                pps: limit.pps,
                burst: limit.burst,
            }
        });
        self.map
            .set(0, value, 0)
            .map_err(|e| BpfError::RouteCache {
                action: "write",
                map: SHED_MAP_NAME,
                detail: chain(&e),
            })?;
        self.current = budget;
        Ok(())
    }

    /// The budget in force.
    pub fn current(&self) -> Option<crate::core::shed::Budget> {
        self.current
    }
}

impl fmt::Debug for ShedBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShedBudget")
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

/// Takes the handle of the workers' shedding budget out of a loaded object.
pub fn take_shed_budget(ebpf: &mut Ebpf) -> Result<ShedBudget, BpfError> {
    let map = ebpf
        .take_map(SHED_MAP_NAME)
        .ok_or(BpfError::MissingObject {
            kind: "map",
            name: SHED_MAP_NAME,
        })?;
    let map = Array::try_from(map).map_err(|e| BpfError::RouteCache {
        action: "open",
        map: SHED_MAP_NAME,
        detail: chain(&e),
    })?;
    Ok(ShedBudget { map, current: None })
}

/// The value of `xorlay_config`: `struct xorlay_config` of `ebpf/maps.h`,
/// pinned to the `XORLAY_CONFIG_*` constants below.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ConfigValue {
    local_id: [u8; 32],
    generation: u64,
    idle_timeout_ns: u64,
    handshake_source_pps: u32,
    handshake_source_burst: u32,
    handshake_global_pps: u32,
    handshake_global_burst: u32,
    neighbor_pps: u32,
    neighbor_burst: u32,
    flags: u32,
    pad: u32,
}

const _: () = assert!(size_of::<ConfigValue>() == consts::CONFIG_LEN as usize);
const _: () =
    assert!(std::mem::offset_of!(ConfigValue, local_id) == consts::CONFIG_OFF_LOCAL_ID as usize);
const _: () = assert!(
    std::mem::offset_of!(ConfigValue, generation) == consts::CONFIG_OFF_GENERATION as usize
);
const _: () = assert!(
    std::mem::offset_of!(ConfigValue, idle_timeout_ns)
        == consts::CONFIG_OFF_IDLE_TIMEOUT_NS as usize
);
const _: () = assert!(
    std::mem::offset_of!(ConfigValue, handshake_source_pps)
        == consts::CONFIG_OFF_HANDSHAKE_SOURCE_PPS as usize
);
const _: () = assert!(
    std::mem::offset_of!(ConfigValue, handshake_source_burst)
        == consts::CONFIG_OFF_HANDSHAKE_SOURCE_BURST as usize
);
const _: () = assert!(
    std::mem::offset_of!(ConfigValue, handshake_global_pps)
        == consts::CONFIG_OFF_HANDSHAKE_GLOBAL_PPS as usize
);
const _: () = assert!(
    std::mem::offset_of!(ConfigValue, handshake_global_burst)
        == consts::CONFIG_OFF_HANDSHAKE_GLOBAL_BURST as usize
);
const _: () = assert!(
    std::mem::offset_of!(ConfigValue, neighbor_pps) == consts::CONFIG_OFF_NEIGHBOR_PPS as usize
);
const _: () = assert!(
    std::mem::offset_of!(ConfigValue, neighbor_burst) == consts::CONFIG_OFF_NEIGHBOR_BURST as usize
);
const _: () =
    assert!(std::mem::offset_of!(ConfigValue, flags) == consts::CONFIG_OFF_FLAGS as usize);

// SAFETY: `#[repr(C)]`, integers and an integer array, no implicit padding
// (the asserts above: 32 + 2 * 8 + 8 * 4 = 80 bytes, a multiple of 8), so
// every bit pattern is a valid value.
unsafe impl aya::Pod for ConfigValue {}

impl ConfigValue {
    fn new(limits: &RateLimits, idle_timeout: Duration) -> ConfigValue {
        let mut value = ConfigValue {
            local_id: [0; 32],
            generation: 1,
            idle_timeout_ns: 0,
            handshake_source_pps: 0,
            handshake_source_burst: 0,
            handshake_global_pps: 0,
            handshake_global_burst: 0,
            neighbor_pps: 0,
            neighbor_burst: 0,
            flags: 0,
            pad: 0,
        };
        value.set_limits(limits);
        value.set_idle_timeout(idle_timeout);
        value
    }

    /// Writes `limits` as the program enforces them (bursts raised to the
    /// clock's step, [`RateLimit::for_clock_step`]).
    fn set_limits(&mut self, limits: &RateLimits) {
        let limits = limits.for_clock_step(clock_step_ns());
        self.handshake_source_pps = limits.handshake_per_source.pps;
        self.handshake_source_burst = limits.handshake_per_source.burst;
        self.handshake_global_pps = limits.handshake_global.pps;
        self.handshake_global_burst = limits.handshake_global.burst;
        self.neighbor_pps = limits.neighbor_data.pps;
        self.neighbor_burst = limits.neighbor_data.burst;
    }

    fn limits(&self) -> RateLimits {
        RateLimits {
            handshake_per_source: RateLimit::new(
                self.handshake_source_pps,
                self.handshake_source_burst,
            ),
            handshake_global: RateLimit::new(
                self.handshake_global_pps,
                self.handshake_global_burst,
            ),
            neighbor_data: RateLimit::new(self.neighbor_pps, self.neighbor_burst),
        }
    }

    fn set_idle_timeout(&mut self, timeout: Duration) {
        self.idle_timeout_ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    }
}

/// The value of `xorlay_routes`: `struct xorlay_route` of `ebpf/maps.h`,
/// pinned to the `XORLAY_ROUTE_*` constants below.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RouteValue {
    next_hop_addr: [u8; 16],
    source_addr: [u8; 16],
    next_hop_port: [u8; 2],
    source_port: [u8; 2],
    flags: u32,
    generation: u64,
    installed_ns: u64,
    last_used_ns: u64,
    /// The program's L2 cache of the next hop (`resolve_l2`); written as
    /// zeros, so an install always resolves afresh.
    l2: RouteL2,
}

/// `l2_*` of `struct xorlay_route`: the program's, zero from userspace.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct RouteL2 {
    checked_ns: u64,
    ifindex: u32,
    max_len: u16,
    dmac: [u8; 6],
    smac: [u8; 6],
    pad: [u8; 6],
}

const _: () = assert!(size_of::<RouteValue>() == consts::ROUTE_LEN as usize);
const _: () = assert!(
    std::mem::offset_of!(RouteValue, next_hop_addr) == consts::ROUTE_OFF_NEXT_HOP_ADDR as usize
);
const _: () = assert!(
    std::mem::offset_of!(RouteValue, source_addr) == consts::ROUTE_OFF_SOURCE_ADDR as usize
);
const _: () = assert!(
    std::mem::offset_of!(RouteValue, next_hop_port) == consts::ROUTE_OFF_NEXT_HOP_PORT as usize
);
const _: () = assert!(
    std::mem::offset_of!(RouteValue, source_port) == consts::ROUTE_OFF_SOURCE_PORT as usize
);
const _: () = assert!(std::mem::offset_of!(RouteValue, flags) == consts::ROUTE_OFF_FLAGS as usize);
const _: () =
    assert!(std::mem::offset_of!(RouteValue, generation) == consts::ROUTE_OFF_GENERATION as usize);
const _: () = assert!(
    std::mem::offset_of!(RouteValue, installed_ns) == consts::ROUTE_OFF_INSTALLED_NS as usize
);
const _: () = assert!(
    std::mem::offset_of!(RouteValue, last_used_ns) == consts::ROUTE_OFF_LAST_USED_NS as usize
);
const _: () =
    assert!(std::mem::offset_of!(RouteValue, l2) == consts::ROUTE_OFF_L2_CHECKED_NS as usize);
const _: () = assert!(size_of::<RouteL2>() == 32);
const _: () = assert!(consts::NODE_ID_LEN == 32);

// SAFETY: `#[repr(C)]`, integers and integer arrays, no implicit padding (the
// asserts above: 16 + 16 + 2 + 2 + 4 + 3 * 8 + 32 = 96 bytes; RouteL2 is
// 8 + 4 + 2 + 3 * 6 = 32), so every bit
// pattern is a valid value.
unsafe impl aya::Pod for RouteValue {}

/// Where the fast path sends data packets for one destination: what a
/// worker's socket would do. Both addresses are of one family (IPv4, or its
/// v4-mapped IPv6 spelling, or IPv6); packets arriving over the other family
/// are left to the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteEntry {
    /// The next hop's underlay address (the chosen neighbor's address and
    /// UDP port).
    pub next_hop: SocketAddr,
    /// Our address toward the next hop and the overlay port: the source of
    /// the datagram the worker's socket would send.
    pub source: SocketAddr,
}

/// A route cache entry as read back from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedRoute {
    /// Where it sends; `None` for a negative entry (no route: dropped).
    pub route: Option<RouteEntry>,
    /// The generation it was installed in ([`RouteCache::generation`]).
    pub generation: u64,
    /// `CLOCK_MONOTONIC_COARSE` nanoseconds at install.
    pub installed_ns: u64,
    /// `CLOCK_MONOTONIC_COARSE` nanoseconds of the last hit the program recorded
    /// (refreshed at most every eighth of the idle timeout), or of install.
    pub last_used_ns: u64,
}

/// The route cache of a loaded program (map `xorlay_routes`) and its
/// runtime configuration (map `xorlay_config`: local ID, generation, idle
/// timeout, rate limits), owned apart from the [`Ebpf`] object so the
/// control thread can keep it. This handle is the only writer of both maps;
/// it keeps a copy of the configuration and writes it whole.
///
/// The program consults the cache only for data packets that passed the
/// filter, are not for this node, and only once [`RouteCache::set_local_id`]
/// was called. An entry is valid while its generation is the current one and
/// it was hit (or installed) within the idle timeout; [`invalidate_all`]
/// makes every entry a miss in O(1).
///
/// [`invalidate_all`]: RouteCache::invalidate_all
pub struct RouteCache {
    routes: HashMap<MapData, [u8; 32], RouteValue>,
    config: Array<MapData, ConfigValue>,
    current: ConfigValue,
}

impl fmt::Debug for RouteCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteCache")
            .field("routes", &self.routes)
            .field("config", &self.current)
            .finish_non_exhaustive()
    }
}

/// Takes the route cache and the runtime configuration out of a program from
/// [`load`] or [`load_with`]; fails if they were taken before.
pub fn take_route_cache(ebpf: &mut Ebpf) -> Result<RouteCache, BpfError> {
    let open_error = |map: &'static str| {
        move |e: aya::maps::MapError| BpfError::RouteCache {
            action: "open",
            map,
            detail: chain(&e),
        }
    };
    if ebpf.map(ROUTES_MAP_NAME).is_none() {
        return Err(BpfError::MissingObject {
            kind: "map",
            name: ROUTES_MAP_NAME,
        });
    }
    let config = ebpf
        .take_map(CONFIG_MAP_NAME)
        .ok_or(BpfError::MissingObject {
            kind: "map",
            name: CONFIG_MAP_NAME,
        })?;
    let config: Array<MapData, ConfigValue> =
        Array::try_from(config).map_err(open_error(CONFIG_MAP_NAME))?;
    let routes = ebpf
        .take_map(ROUTES_MAP_NAME)
        .ok_or(BpfError::MissingObject {
            kind: "map",
            name: ROUTES_MAP_NAME,
        })?;
    let routes = HashMap::try_from(routes).map_err(open_error(ROUTES_MAP_NAME))?;
    let current = config.get(&0, 0).map_err(|e| BpfError::RouteCache {
        action: "read",
        map: CONFIG_MAP_NAME,
        detail: chain(&e),
    })?;
    Ok(RouteCache {
        routes,
        config,
        current,
    })
}

/// Opens a pinned map of `pin_dir` as a typed map.
fn open_pinned_map<T>(pin_dir: &Path, name: &str) -> Result<T, String>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let data = MapData::from_pin(pin_dir.join(name)).map_err(|e| chain(&e))?;
    let map = Map::from_map_data(data).map_err(|e| chain(&e))?;
    T::try_from(map).map_err(|e| chain(&e))
}

impl RouteCache {
    /// A second handle on the route cache pinned in `pin_dir` (by a router
    /// started with [`XdpRouter::attach_pinned`]), reading the configuration
    /// as it is now. For inspection and tests: the configuration has one
    /// writer, the router's own handle; installs and removals through this
    /// one are safe.
    pub fn open_pinned(pin_dir: &Path) -> Result<RouteCache, BpfError> {
        let open_error = |map: &'static str| {
            move |detail: String| BpfError::RouteCache {
                action: "open",
                map,
                detail: format!("{detail} (pinned in {})", pin_dir.display()),
            }
        };
        let config: Array<MapData, ConfigValue> =
            open_pinned_map(pin_dir, CONFIG_MAP_NAME).map_err(open_error(CONFIG_MAP_NAME))?;
        let routes =
            open_pinned_map(pin_dir, ROUTES_MAP_NAME).map_err(open_error(ROUTES_MAP_NAME))?;
        let current = config.get(&0, 0).map_err(|e| BpfError::RouteCache {
            action: "read",
            map: CONFIG_MAP_NAME,
            detail: chain(&e),
        })?;
        Ok(RouteCache {
            routes,
            config,
            current,
        })
    }

    /// The local ID in force, if set.
    pub fn local_id(&self) -> Option<NodeId> {
        (self.current.flags & consts::CONFIG_F_LOCAL_ID as u32 != 0)
            .then(|| NodeId::from_bytes(self.current.local_id))
    }

    /// Entries installed in generation `generation` (a walk of the kernel
    /// map, like [`RouteCache::len`]).
    pub fn count_generation(&self, generation: u64) -> Result<usize, BpfError> {
        let mut count = 0usize;
        for (seen, item) in self.routes.iter().enumerate() {
            let (_, value) = item.map_err(|e| BpfError::RouteCache {
                action: "read",
                map: ROUTES_MAP_NAME,
                detail: chain(&e),
            })?;
            if value.generation == generation {
                count += 1;
            }
            if seen >= ROUTES_MAX {
                break;
            }
        }
        Ok(count)
    }

    /// Sends data packets for `dst` to `route.next_hop` from `route.source`,
    /// in the current generation (replacing any entry for `dst`). Fails
    /// before touching the map if the two addresses are of different
    /// families, unspecified, or have port 0.
    pub fn install(&mut self, dst: &NodeId, route: &RouteEntry) -> Result<(), BpfError> {
        let invalid = |reason| BpfError::InvalidRoute {
            next_hop: route.next_hop,
            local: route.source,
            reason,
        };
        let next_hop = neighbor_key(&route.next_hop);
        let source = neighbor_key(&route.source);
        let next_hop_v4 = next_hop.ip().to_ipv4_mapped().is_some();
        if next_hop_v4 != source.ip().to_ipv4_mapped().is_some() {
            return Err(invalid(
                "the next hop and the source are of different address families",
            ));
        }
        if next_hop.socket_addr().ip().is_unspecified()
            || source.socket_addr().ip().is_unspecified()
        {
            return Err(invalid("an address is unspecified (0.0.0.0 or ::)"));
        }
        if route.next_hop.port() == 0 || route.source.port() == 0 {
            return Err(invalid("a UDP port is 0"));
        }
        let now = monotonic_ns();
        self.insert(
            dst,
            RouteValue {
                next_hop_addr: next_hop.addr,
                source_addr: source.addr,
                next_hop_port: route.next_hop.port().to_be_bytes(),
                source_port: route.source.port().to_be_bytes(),
                flags: 0,
                generation: self.current.generation,
                installed_ns: now,
                last_used_ns: now,
                l2: RouteL2::default(),
            },
        )
    }

    /// Marks `dst` unroutable in the current generation: the program drops
    /// data packets for it (`drop_no_route`) instead of passing them to the
    /// workers, so a flood to an unroutable ID stays in the kernel.
    pub fn install_no_route(&mut self, dst: &NodeId) -> Result<(), BpfError> {
        let now = monotonic_ns();
        self.insert(
            dst,
            RouteValue {
                next_hop_addr: [0; 16],
                source_addr: [0; 16],
                next_hop_port: [0; 2],
                source_port: [0; 2],
                flags: consts::ROUTE_F_NEGATIVE as u32,
                generation: self.current.generation,
                installed_ns: now,
                last_used_ns: now,
                l2: RouteL2::default(),
            },
        )
    }

    fn insert(&mut self, dst: &NodeId, value: RouteValue) -> Result<(), BpfError> {
        self.routes
            .insert(dst.as_bytes(), value, 0)
            .map_err(|e| BpfError::RouteCache {
                action: "update",
                map: ROUTES_MAP_NAME,
                detail: chain(&e),
            })
    }

    /// Deletes the entry for `dst`; `false` if there was none.
    pub fn remove(&mut self, dst: &NodeId) -> Result<bool, BpfError> {
        match self.routes.remove(dst.as_bytes()) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(e) if chain_errno(&e) == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(BpfError::RouteCache {
                action: "update",
                map: ROUTES_MAP_NAME,
                detail: chain(&e),
            }),
        }
    }

    /// The entry for `dst`, valid or not.
    pub fn get(&self, dst: &NodeId) -> Result<Option<CachedRoute>, BpfError> {
        let value = match self.routes.get(dst.as_bytes(), 0) {
            Ok(value) => value,
            Err(aya::maps::MapError::KeyNotFound) => return Ok(None),
            Err(e) => {
                return Err(BpfError::RouteCache {
                    action: "read",
                    map: ROUTES_MAP_NAME,
                    detail: chain(&e),
                });
            }
        };
        let negative = value.flags & consts::ROUTE_F_NEGATIVE as u32 != 0;
        let addr = |addr: [u8; 16], port: [u8; 2]| NeighborKey { addr, port, pad: 0 }.socket_addr();
        Ok(Some(CachedRoute {
            route: (!negative).then(|| RouteEntry {
                next_hop: addr(value.next_hop_addr, value.next_hop_port),
                source: addr(value.source_addr, value.source_port),
            }),
            generation: value.generation,
            installed_ns: value.installed_ns,
            last_used_ns: value.last_used_ns,
        }))
    }

    /// Makes every entry a miss at once (O(1)): bumps the generation. Call
    /// it on every change of the neighbor set or of their addresses, before
    /// installing routes computed from the new table. Returns the new
    /// generation.
    pub fn invalidate_all(&mut self) -> Result<u64, BpfError> {
        // From the map's generation, not this handle's copy: after a hot
        // restart the previous owner may have bumped it meanwhile.
        if let Ok(value) = self.config.get(&0, 0) {
            self.current.generation = self.current.generation.max(value.generation);
        }
        let mut next = self.current;
        next.generation = next.generation.wrapping_add(1);
        self.write(next)?;
        Ok(self.current.generation)
    }

    /// The current generation: entries installed in another one are misses.
    pub fn generation(&self) -> u64 {
        self.current.generation
    }

    /// Sets this node's ID and turns the route cache on: data packets for
    /// `id` always pass to the workers (never forwarded), packets for other
    /// IDs are looked up in the cache.
    pub fn set_local_id(&mut self, id: &NodeId) -> Result<(), BpfError> {
        let mut next = self.current;
        next.local_id = *id.as_bytes();
        next.flags |= consts::CONFIG_F_LOCAL_ID as u32;
        self.write(next)
    }

    /// Sets the rate limits of the filter step. A limit with a rate and no
    /// burst fails before anything changes. Buckets keep their state: a
    /// lower rate applies from the next packet on. A burst below one step
    /// of the program's clock is raised to it ([`RateLimit::for_clock_step`],
    /// logged).
    pub fn set_limits(&mut self, limits: &RateLimits) -> Result<(), BpfError> {
        limits.check()?;
        let mut next = self.current;
        next.set_limits(limits);
        self.write(next)?;
        for ((name, given), (_, used)) in limits.named().into_iter().zip(next.limits().named()) {
            if given != used {
                log::warn!(
                    "xdp.limits.{name}: burst {} raised to {} ({} packets/s over the XDP clock's {} ms steps); set burst >= {} to silence this",
                    given.burst,
                    used.burst,
                    given.pps,
                    clock_step_ns() as f64 / 1e6,
                    used.burst
                );
            }
        }
        Ok(())
    }

    /// The rate limits in force (bursts as raised for the clock).
    pub fn limits(&self) -> RateLimits {
        self.current.limits()
    }

    /// Sets how long an entry stays valid without a hit;
    /// [`Duration::ZERO`] = until evicted or invalidated.
    pub fn set_idle_timeout(&mut self, timeout: Duration) -> Result<(), BpfError> {
        let mut next = self.current;
        next.set_idle_timeout(timeout);
        self.write(next)
    }

    /// The idle timeout in force.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_nanos(self.current.idle_timeout_ns)
    }

    fn write(&mut self, next: ConfigValue) -> Result<(), BpfError> {
        self.config
            .set(0, next, 0)
            .map_err(|e| BpfError::RouteCache {
                action: "update",
                map: CONFIG_MAP_NAME,
                detail: chain(&e),
            })?;
        self.current = next;
        Ok(())
    }

    /// Entries in the map now, valid or not (a walk of the kernel map:
    /// O(entries) system calls, for statistics, not for the hot path).
    pub fn len(&self) -> Result<usize, BpfError> {
        let mut count = 0usize;
        for key in self.routes.keys() {
            key.map_err(|e| BpfError::RouteCache {
                action: "read",
                map: ROUTES_MAP_NAME,
                detail: chain(&e),
            })?;
            count += 1;
            // A walk restarted by concurrent evictions could loop; the map
            // never holds more than ROUTES_MAX keys.
            if count > ROUTES_MAX {
                break;
            }
        }
        Ok(count)
    }

    /// Whether the map has no entry (see [`RouteCache::len`]).
    pub fn is_empty(&self) -> Result<bool, BpfError> {
        Ok(self.len()? == 0)
    }
}

// The route cache moves to the control thread.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<RouteCache>();
};

/// Writes the default runtime configuration into a freshly loaded object.
fn write_default_config(ebpf: &mut Ebpf) -> Result<(), BpfError> {
    let map = ebpf
        .map_mut(CONFIG_MAP_NAME)
        .ok_or(BpfError::MissingObject {
            kind: "map",
            name: CONFIG_MAP_NAME,
        })?;
    let update_error = |e: aya::maps::MapError| BpfError::RouteCache {
        action: "update",
        map: CONFIG_MAP_NAME,
        detail: chain(&e),
    };
    let mut config: Array<&mut MapData, ConfigValue> =
        Array::try_from(map).map_err(update_error)?;
    config
        .set(
            0,
            ConfigValue::new(&RateLimits::default(), DEFAULT_IDLE_TIMEOUT),
            0,
        )
        .map_err(update_error)
}

/// Adds interface `if_index` to the egress device map of a loaded program,
/// so the fast path may redirect to it (`XdpRouter::attach` does this for
/// every interface it attaches to). The interface must exist in the calling
/// thread's network namespace.
pub fn add_tx_port(ebpf: &mut Ebpf, if_index: u32) -> Result<(), BpfError> {
    let error = |detail: String| BpfError::TxPort {
        interface: format!("#{if_index}"),
        if_index,
        detail,
    };
    let map = ebpf
        .map_mut(TX_PORTS_MAP_NAME)
        .ok_or(BpfError::MissingObject {
            kind: "map",
            name: TX_PORTS_MAP_NAME,
        })?;
    let mut ports: DevMapHash<&mut MapData> =
        DevMapHash::try_from(map).map_err(|e| error(chain(&e)))?;
    ports
        .insert(if_index, if_index, None, 0)
        .map_err(|e| error(chain(&e)))
}

/// Removes from a reused egress device map the interfaces an earlier
/// instance attached to and this one does not. Failures are logged: a stale
/// entry only lets the fast path redirect to an interface without our
/// program.
fn prune_tx_ports(ebpf: &mut Ebpf, keep: &[u32]) {
    let Some(map) = ebpf.map_mut(TX_PORTS_MAP_NAME) else {
        return;
    };
    let mut ports: DevMapHash<&mut MapData> = match DevMapHash::try_from(map) {
        Ok(ports) => ports,
        Err(e) => {
            log::warn!("pruning {TX_PORTS_MAP_NAME}: {}", chain(&e));
            return;
        }
    };
    let stale: Vec<u32> = ports
        .keys()
        .take(TX_PORTS_MAX + 1)
        .filter_map(Result::ok)
        .filter(|if_index| !keep.contains(if_index))
        .collect();
    for if_index in stale {
        match ports.remove(if_index) {
            Ok(()) => log::info!("removed ifindex {if_index} from the pinned {TX_PORTS_MAP_NAME}"),
            Err(e) => log::warn!(
                "removing ifindex {if_index} from {TX_PORTS_MAP_NAME}: {}",
                chain(&e)
            ),
        }
    }
}

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds: the clock of the program
/// (`bpf_ktime_get_coarse_ns`).
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to write.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    // It cannot fail on Linux (2.6.32+); on failure `now` stays 0, which
    // only makes the entry look old (a miss sooner), never wrong.
    debug_assert_eq!(rc, 0);
    timespec_ns(&now)
}

fn timespec_ns(t: &libc::timespec) -> u64 {
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// How far the program's clock moves per step: the resolution of
/// `CLOCK_MONOTONIC_COARSE` (one kernel tick, 1-10 ms). 10 ms if the kernel
/// does not say (the longest tick Linux has, so bursts are never too small).
pub fn clock_step_ns() -> u64 {
    static STEP: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *STEP.get_or_init(|| {
        let mut res = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `res` is a valid timespec for the call to write.
        let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) };
        match timespec_ns(&res) {
            ns if rc == 0 && ns > 0 => ns,
            _ => 10_000_000,
        }
    })
}

/// The loaded XDP program and its attachments. Dropping it (or
/// [`XdpRouter::detach`]) detaches the program from every interface; with a
/// pin directory ([`XdpRouter::attach_pinned`]) only while this process
/// still owns the pins (then it also removes them), see `docs/xdp.md`,
/// "Lifecycle".
#[derive(Debug)]
pub struct XdpRouter {
    ebpf: Ebpf,
    attachments: Vec<Attachment>,
    pins: Option<Pins>,
}

#[derive(Debug)]
struct Attachment {
    interface: String,
    /// "native", "generic", or "inherited" (a pinned link taken over: its
    /// mode is the one it was created with).
    mode: &'static str,
    link: AttachedLink,
}

#[derive(Debug)]
enum AttachedLink {
    /// Held by the program object (no pin directory).
    Managed(XdpLinkId),
    /// Pinned as `<pin_dir>/link-<interface>`: stays attached after this
    /// process until the pin is removed.
    Pinned(FdLink),
}

/// The pin directory of a router and what was found in it at start.
#[derive(Debug)]
struct Pins {
    dir: PathBuf,
    start: PinnedStart,
    /// This process, as written to the owner record.
    me: OwnerValue,
    /// The owner record was written (the pins are ours until another
    /// instance writes its own).
    owned: bool,
    /// The directory held no state before this process: on a failed start
    /// everything in it is removed again.
    fresh: bool,
}

/// What [`XdpRouter::attach_pinned`] found in its pin directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinnedStart {
    /// No usable state: new maps, pinned now.
    Fresh,
    /// The owner is alive: its maps are reused and the program is swapped
    /// into its links atomically (a hot restart; the owner sees the change
    /// when it exits and leaves everything in place).
    HotRestart {
        /// The previous owner.
        pid: u32,
    },
    /// The owner is gone (crashed or killed): its maps are reused, with the
    /// entries counted here.
    Reclaimed {
        /// The previous owner, if the record was readable.
        pid: Option<u32>,
        /// Route cache entries of the current generation.
        routes: usize,
        /// Allowlisted neighbors.
        neighbors: usize,
    },
}

impl PinnedStart {
    /// Whether state of an earlier instance is in use (the control plane
    /// should start warm, see `ControlIo::warm_start`).
    pub fn is_takeover(&self) -> bool {
        !matches!(self, PinnedStart::Fresh)
    }
}

impl XdpRouter {
    /// Loads the program for overlay port `port`, the neighbor filter on,
    /// and attaches it to every interface of `interfaces` (names resolved in
    /// the calling thread's network namespace) in `mode`. All interfaces are
    /// checked before anything is loaded; an interface listed twice is
    /// attached once; if one attach fails, those already made are undone.
    ///
    /// The allowlist starts empty: no data packet passes XDP until it is
    /// filled through [`XdpRouter::take_neighbor_map`]. Every attached
    /// interface is also added to the egress device map, so the fast path
    /// can redirect between them; the route cache stays off until the local
    /// ID is set through [`XdpRouter::take_route_cache`].
    pub fn attach(
        interfaces: &[String],
        port: u16,
        mode: XdpAttachMode,
    ) -> Result<XdpRouter, BpfError> {
        XdpRouter::attach_with(interfaces, port, mode, LoadOptions::default())
    }

    /// [`XdpRouter::attach`] with load options (the neighbor filter off, for
    /// debugging).
    pub fn attach_with(
        interfaces: &[String],
        port: u16,
        mode: XdpAttachMode,
        options: LoadOptions,
    ) -> Result<XdpRouter, BpfError> {
        let targets = resolve_targets(interfaces)?;
        check_capabilities()?;
        let ebpf = load_with(port, options)?;
        let mut router = XdpRouter {
            ebpf,
            attachments: Vec::with_capacity(targets.len()),
            pins: None,
        };
        for (interface, if_index) in targets {
            router.attach_one(interface, if_index, mode)?;
        }
        Ok(router)
    }

    /// [`XdpRouter::attach_with`] keeping its state in `pin_dir` (a
    /// directory on a bpf filesystem, created if missing): the state maps
    /// ([`PINNED_MAPS`]) are pinned there by name, the XDP link of each
    /// interface as `link-<interface>`, and the owner record
    /// (`xorlay_owner`) names this process.
    ///
    /// Pins left by an earlier instance are reused: entries whose layout
    /// differs from this build's, unknown `xorlay_*` or `link-*` entries and
    /// links that are no XDP links are removed first (logged with the
    /// reason); a live owner is taken over (the new program is swapped into
    /// each pinned link atomically with `BPF_LINK_UPDATE`: no packet sees
    /// no program), a dead one's state is reclaimed. [`XdpRouter::pinned_start`]
    /// says which. Entries not made by xorlay are refused, never removed.
    /// The pins become this process's with [`XdpRouter::claim_pins`], to
    /// call once the rest of the router runs.
    pub fn attach_pinned(
        interfaces: &[String],
        port: u16,
        mode: XdpAttachMode,
        options: LoadOptions,
        pin_dir: &Path,
    ) -> Result<XdpRouter, BpfError> {
        let targets = resolve_targets(interfaces)?;
        check_capabilities()?;
        prepare_pin_dir(pin_dir)?;
        let survey = survey_pin_dir(pin_dir)?;
        let previous = survey.owner;
        let maps_present = survey.maps_present;
        let ebpf = load_inner(port, options, Some(pin_dir))?;
        let me = OwnerValue::of_process(std::process::id());
        let start = match previous {
            _ if !maps_present => PinnedStart::Fresh,
            Some(owner) if owner.pid != me.pid && owner.is_alive() => {
                PinnedStart::HotRestart { pid: owner.pid }
            }
            owner => PinnedStart::Reclaimed {
                pid: owner.map(|o| o.pid).filter(|&pid| pid != 0),
                routes: 0,
                neighbors: 0,
            },
        };
        let mut router = XdpRouter {
            ebpf,
            attachments: Vec::with_capacity(targets.len()),
            pins: Some(Pins {
                dir: pin_dir.to_path_buf(),
                start,
                me,
                owned: false,
                fresh: !maps_present,
            }),
        };
        router.count_reclaimed()?;
        if maps_present {
            let added = NeighborMap::open_pinned(pin_dir)?.add_ip_keys()?;
            if added > 0 {
                log::info!(
                    "the pinned XDP allowlist keyed {added} neighbor(s) by IP and UDP port (a \
                     build before flow ports): added their IP keys, which this build's program \
                     looks up"
                );
            }
        }
        for (interface, if_index) in &targets {
            router.attach_pinned_one(interface, *if_index, mode, pin_dir)?;
        }
        let keep: Vec<u32> = targets.iter().map(|&(_, if_index)| if_index).collect();
        prune_tx_ports(&mut router.ebpf, &keep);
        for stale in survey.links {
            if targets.iter().all(|(interface, _)| *interface != stale) {
                let path = link_pin_path(pin_dir, &stale);
                log::info!(
                    "removing the pinned XDP link of {stale} ({}): not in `interfaces` any more",
                    path.display()
                );
                remove_pin(&path);
            }
        }
        if let Some(pins) = &router.pins {
            match &pins.start {
                PinnedStart::Fresh => log::info!(
                    "XDP state pinned in {} (owner: pid {})",
                    pin_dir.display(),
                    me.pid
                ),
                PinnedStart::HotRestart { pid } => {
                    log::info!("hot restart: taking over XDP from pid {pid}")
                }
                PinnedStart::Reclaimed {
                    pid,
                    routes,
                    neighbors,
                } => log::warn!(
                    "reclaiming pinned XDP state left by {} (crashed): keeping {routes} cached \
                     routes and {neighbors} neighbors until the control plane has re-established \
                     its sessions",
                    pid.map_or_else(|| "an unknown process".to_string(), |p| format!("pid {p}"))
                ),
            }
        }
        Ok(router)
    }

    /// Makes this process the owner of the pins (writes the owner record):
    /// call it once everything else runs. From then on the previous owner
    /// leaves the pins alone at exit, and this router removes them at its
    /// own exit unless another instance claims them. Until then, dropping
    /// this router leaves the pins as found (links keep the program swapped
    /// in), or removes them if it created them. Nothing without a pin
    /// directory.
    pub fn claim_pins(&mut self) -> Result<(), BpfError> {
        self.write_owner()
    }

    /// What was found in the pin directory at start; `None` without one.
    pub fn pinned_start(&self) -> Option<&PinnedStart> {
        self.pins.as_ref().map(|p| &p.start)
    }

    /// Whether another instance has taken over this router's pins (its
    /// owner record names another process): on exit this router then
    /// leaves links and pins alone. `false` without a pin directory.
    pub fn taken_over(&self) -> bool {
        let Some(pins) = &self.pins else {
            return false;
        };
        pins.owned && read_owner(&pins.dir).is_some_and(|owner| owner != pins.me)
    }

    fn count_reclaimed(&mut self) -> Result<(), BpfError> {
        let Some(pins) = &self.pins else {
            return Ok(());
        };
        if !matches!(pins.start, PinnedStart::Reclaimed { .. }) {
            return Ok(());
        }
        let dir = pins.dir.clone();
        let cache = RouteCache::open_pinned(&dir)?;
        let routes = cache.count_generation(cache.generation())?;
        let neighbors = NeighborMap::open_pinned(&dir)?.keys()?.len();
        if let Some(Pins {
            start:
                PinnedStart::Reclaimed {
                    routes: r,
                    neighbors: n,
                    ..
                },
            ..
        }) = &mut self.pins
        {
            *r = routes;
            *n = neighbors;
        }
        Ok(())
    }

    fn write_owner(&mut self) -> Result<(), BpfError> {
        let Some(pins) = &mut self.pins else {
            return Ok(());
        };
        let error = |e: &dyn std::error::Error| BpfError::Pin {
            path: pins.dir.join(OWNER_MAP_NAME),
            detail: format!("cannot write the owner record: {}", chain(e)),
        };
        let map = self
            .ebpf
            .map_mut(OWNER_MAP_NAME)
            .ok_or(BpfError::MissingObject {
                kind: "map",
                name: OWNER_MAP_NAME,
            })?;
        let mut owner: Array<&mut MapData, OwnerValue> =
            Array::try_from(map).map_err(|e| error(&e))?;
        owner.set(0, pins.me, 0).map_err(|e| error(&e))?;
        pins.owned = true;
        Ok(())
    }

    fn attach_one(
        &mut self,
        interface: &str,
        if_index: u32,
        mode: XdpAttachMode,
    ) -> Result<(), BpfError> {
        let (link, attached) = self.attach_new(interface, if_index, mode)?;
        self.finish_attach(
            interface,
            if_index,
            attached.name(),
            AttachedLink::Managed(link),
        )
    }

    /// Attaches to `interface` through its pinned link (swapping this
    /// program in), or attaches anew and pins the link.
    fn attach_pinned_one(
        &mut self,
        interface: &str,
        if_index: u32,
        mode: XdpAttachMode,
        pin_dir: &Path,
    ) -> Result<(), BpfError> {
        let path = link_pin_path(pin_dir, interface);
        if path.exists() {
            match self.update_pinned_link(&path) {
                Ok(link) => {
                    log::info!(
                        "XDP on {interface}: program replaced in the pinned link {}",
                        path.display()
                    );
                    return self.finish_attach(
                        interface,
                        if_index,
                        "inherited",
                        AttachedLink::Pinned(link),
                    );
                }
                Err(detail) => {
                    log::warn!(
                        "XDP on {interface}: the pinned link {} cannot take the new program \
                         ({detail}); removing it and attaching anew",
                        path.display()
                    );
                    remove_pin(&path);
                }
            }
        }
        let (id, attached) = self.attach_new(interface, if_index, mode)?;
        let pin_error = |detail: String| BpfError::Pin {
            path: path.clone(),
            detail: format!("cannot pin the XDP link of {interface}: {detail}"),
        };
        let program = xdp_program(&mut self.ebpf)?;
        let link = program.take_link(id).map_err(|e| pin_error(chain(&e)))?;
        let link = FdLink::try_from(link).map_err(|e| {
            pin_error(format!(
                "{}; the kernel attached it through netlink, which cannot be pinned (Linux 5.9+ \
                 makes bpf links); remove pin_dir from [xdp] to run without pinning",
                chain(&e)
            ))
        })?;
        let pinned = link.pin(&path).map_err(|e| pin_error(chain(&e)))?;
        self.finish_attach(
            interface,
            if_index,
            attached.name(),
            AttachedLink::Pinned(FdLink::from(pinned)),
        )
    }

    /// Swaps this program into the pinned link at `path`.
    fn update_pinned_link(&mut self, path: &Path) -> Result<FdLink, String> {
        let pinned = PinnedLink::from_pin(path).map_err(|e| chain(&e))?;
        let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| chain(&e))?;
        let program = xdp_program(&mut self.ebpf).map_err(|e| e.to_string())?;
        let id = program.attach_to_link(link).map_err(|e| chain(&e))?;
        let link = program.take_link(id).map_err(|e| chain(&e))?;
        FdLink::try_from(link).map_err(|e| chain(&e))
    }

    fn attach_new(
        &mut self,
        interface: &str,
        if_index: u32,
        mode: XdpAttachMode,
    ) -> Result<(XdpLinkId, AttachedMode), BpfError> {
        let program = xdp_program(&mut self.ebpf)?;
        let attempt = |program: &mut Xdp, mode: AttachedMode| {
            program
                .attach_to_if_index(if_index, mode.aya())
                .map(|link| (link, mode))
                .map_err(|e| BpfError::from_attach(&e, interface, if_index, mode))
        };
        let done = match mode {
            XdpAttachMode::Native => attempt(program, AttachedMode::Native)?,
            XdpAttachMode::Generic => attempt(program, AttachedMode::Generic)?,
            XdpAttachMode::Auto => match attempt(program, AttachedMode::Native) {
                Ok(done) => done,
                Err(BpfError::NativeAttach { detail, .. }) => {
                    log::warn!(
                        "XDP on {interface}: native mode failed ({detail}); \
                         falling back to generic mode (slower)"
                    );
                    attempt(program, AttachedMode::Generic)?
                }
                // No privileges, or another program already there: generic
                // mode would fail the same way.
                Err(error) => return Err(error),
            },
        };
        log::info!("XDP attached to {interface} in {} mode", done.1.name());
        Ok(done)
    }

    fn finish_attach(
        &mut self,
        interface: &str,
        if_index: u32,
        mode: &'static str,
        link: AttachedLink,
    ) -> Result<(), BpfError> {
        warn_without_forwarding(interface);
        self.attachments.push(Attachment {
            interface: interface.to_string(),
            mode,
            link,
        });
        add_tx_port(&mut self.ebpf, if_index).map_err(|error| match error {
            BpfError::TxPort {
                if_index, detail, ..
            } => BpfError::TxPort {
                interface: interface.to_string(),
                if_index,
                detail,
            },
            other => other,
        })
    }

    /// Every interface the program is attached to, with its mode ("native",
    /// "generic", or "inherited" for a pinned link taken over).
    pub fn attached(&self) -> Vec<(String, &'static str)> {
        self.attachments
            .iter()
            .map(|a| (a.interface.clone(), a.mode))
            .collect()
    }

    /// The counters, summed over the CPUs.
    pub fn counters(&self) -> Result<XdpCounters, BpfError> {
        read_counters(&self.ebpf)
    }

    /// The loaded object, for map access.
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// Takes the neighbor allowlist out of the loaded object, for the control
    /// thread to own (see [`NeighborMap`]); `None` once taken. The map stays
    /// in use by the program. (A map of the wrong type, which only a build
    /// mixing sources could give, is logged and also gives `None`.)
    pub fn take_neighbor_map(&mut self) -> Option<NeighborMap> {
        match take_neighbor_map(&mut self.ebpf) {
            Ok(map) => Some(map),
            Err(BpfError::MissingObject { .. }) => None,
            Err(error) => {
                log::error!("{error}");
                None
            }
        }
    }

    /// Takes the route cache and the runtime configuration out of the loaded
    /// object, for the control thread to own (see [`RouteCache`]); `None`
    /// once taken. (A map of the wrong type, which only a build mixing
    /// sources could give, is logged and also gives `None`.)
    /// Takes the handle of the workers' shedding budget (map `xorlay_shed`);
    /// `None` if the object has no such map or it cannot be opened (logged).
    pub fn take_shed_budget(&mut self) -> Option<ShedBudget> {
        match take_shed_budget(&mut self.ebpf) {
            Ok(map) => Some(map),
            Err(BpfError::MissingObject { .. }) => None,
            Err(error) => {
                log::error!("{error}");
                None
            }
        }
    }

    /// Takes the workers' backlog flags (`xorlay_backlog`), mapped into
    /// memory; `None` (logged) if that fails.
    pub fn take_backlog(&mut self) -> Option<crate::io::backlog::BacklogMap> {
        match crate::io::backlog::BacklogMap::take(&mut self.ebpf) {
            Ok(map) => map,
            Err(error) => {
                log::warn!(
                    "load shedding by queue is off: {error}; the shedding budget still applies"
                );
                None
            }
        }
    }

    /// Takes the route cache handle (see [`take_route_cache`]).
    pub fn take_route_cache(&mut self) -> Option<RouteCache> {
        match take_route_cache(&mut self.ebpf) {
            Ok(cache) => Some(cache),
            Err(BpfError::MissingObject { .. }) => None,
            Err(error) => {
                log::error!("{error}");
                None
            }
        }
    }

    /// Detaches the program from every interface and unloads it. Failures
    /// are logged (there is nothing else to do about them at shutdown).
    pub fn detach(self) {
        drop(self);
    }

    fn detach_all(&mut self) {
        let pins = self.pins.take();
        // With pins, links and maps are left alone unless this process owns
        // them (or made them and failed to start).
        let release = match &pins {
            None => true,
            Some(pins) if pins.owned => match read_owner(&pins.dir) {
                Some(owner) if owner == pins.me => true,
                Some(owner) => {
                    log::info!(
                        "XDP was taken over by pid {}: leaving its links and the pins in {} in \
                         place",
                        owner.pid,
                        pins.dir.display()
                    );
                    false
                }
                None => {
                    log::warn!(
                        "the owner record in {} is gone or unreadable: leaving the pins in place",
                        pins.dir.display()
                    );
                    false
                }
            },
            Some(pins) => pins.fresh,
        };
        let attachments: Vec<Attachment> = self.attachments.drain(..).collect();
        let mut managed = Vec::new();
        for attachment in attachments {
            match attachment.link {
                AttachedLink::Managed(id) => managed.push((attachment.interface, id)),
                AttachedLink::Pinned(link) => {
                    if release && let Some(pins) = &pins {
                        remove_pin(&link_pin_path(&pins.dir, &attachment.interface));
                        // Closing the last descriptor destroys the link.
                        drop(link);
                        log::info!("XDP detached from {}", attachment.interface);
                    }
                }
            }
        }
        if release && let Some(pins) = &pins {
            remove_pin_dir(&pins.dir);
        }
        if managed.is_empty() {
            return;
        }
        let program = match xdp_program(&mut self.ebpf) {
            Ok(program) => program,
            Err(error) => {
                // Cannot happen for an attached router; dropping `ebpf` still
                // detaches every link aya holds.
                log::warn!("detaching XDP: {error}");
                return;
            }
        };
        for (interface, link) in managed {
            match program.detach(link) {
                Ok(()) => log::info!("XDP detached from {interface}"),
                Err(error) => log::warn!(
                    "detaching XDP from {}: {}; `ip link set dev {} xdp off` removes it",
                    interface,
                    chain(&error),
                    interface
                ),
            }
        }
    }
}

/// Fails, naming them, if this process lacks a capability that loading or
/// attaching XDP needs. An unreadable effective set checks nothing (the
/// kernel's own error then speaks).
pub fn check_capabilities() -> Result<(), BpfError> {
    let Some(effective) = CapSet::effective() else {
        return Ok(());
    };
    let missing = effective.missing_for_xdp();
    if missing.is_empty() {
        return Ok(());
    }
    Err(BpfError::MissingCapabilities {
        missing: missing.join(", "),
        effective: effective.to_string(),
        user: whoami(),
    })
}

/// Resolves interface names to indexes (in the calling thread's network
/// namespace), each index once.
fn resolve_targets(interfaces: &[String]) -> Result<Vec<(&str, u32)>, BpfError> {
    let mut targets: Vec<(&str, u32)> = Vec::with_capacity(interfaces.len());
    for interface in interfaces {
        let if_index = if_index(interface)?;
        if targets.iter().all(|&(_, seen)| seen != if_index) {
            targets.push((interface, if_index));
        }
    }
    Ok(targets)
}

/// The layout of a map this build pins: a pinned map is reused only if all
/// of it matches (else its state cannot be read right).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MapLayout {
    /// The map's name in [`XDP_OBJECT`] and its pin name.
    pub name: &'static str,
    /// Its type.
    pub map_type: MapType,
    /// Key size, bytes.
    pub key_size: u32,
    /// Value size, bytes (per CPU for per-CPU maps).
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
}

/// Every map pinned in a pin directory, with the layout of this build
/// (checked against the loaded object by a test).
pub const PINNED_MAPS: [MapLayout; 8] = [
    MapLayout {
        name: STATS_MAP_NAME,
        map_type: MapType::PerCpuArray,
        key_size: 4,
        value_size: 8,
        max_entries: consts::XDP_STAT_COUNT as u32,
    },
    MapLayout {
        name: NEIGHBORS_MAP_NAME,
        map_type: MapType::PerCpuHash,
        key_size: consts::NEIGHBOR_KEY_LEN as u32,
        value_size: 8,
        max_entries: consts::NEIGHBORS_MAX as u32,
    },
    MapLayout {
        name: CONFIG_MAP_NAME,
        map_type: MapType::Array,
        key_size: 4,
        value_size: consts::CONFIG_LEN as u32,
        max_entries: 1,
    },
    MapLayout {
        name: "xorlay_handshake_sources",
        map_type: MapType::LruHash,
        key_size: 16,
        value_size: 8,
        max_entries: consts::HANDSHAKE_SOURCES_MAX as u32,
    },
    MapLayout {
        name: "xorlay_handshake_global",
        map_type: MapType::Array,
        key_size: 4,
        value_size: 16,
        max_entries: 1,
    },
    MapLayout {
        name: ROUTES_MAP_NAME,
        map_type: MapType::LruHash,
        key_size: consts::NODE_ID_LEN as u32,
        value_size: consts::ROUTE_LEN as u32,
        max_entries: consts::ROUTES_MAX as u32,
    },
    MapLayout {
        name: TX_PORTS_MAP_NAME,
        map_type: MapType::DevMapHash,
        key_size: 4,
        value_size: 8,
        max_entries: consts::TX_PORTS_MAX as u32,
    },
    MapLayout {
        name: OWNER_MAP_NAME,
        map_type: MapType::Array,
        key_size: 4,
        value_size: 16,
        max_entries: 1,
    },
];

/// The layout of the map pinned at `path`, or why it has none.
pub fn pinned_layout(path: &Path) -> Result<MapLayout, String> {
    let data = MapData::from_pin(path).map_err(|e| chain(&e))?;
    let info = data.info().map_err(|e| chain(&e))?;
    Ok(MapLayout {
        name: "",
        map_type: info.map_type().map_err(|e| chain(&e))?,
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
    })
}

/// The owner record (`struct xorlay_owner` of `ebpf/maps.h`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OwnerValue {
    pid: u32,
    pad: u32,
    /// Start time of `pid`, clock ticks after boot: tells a live owner from
    /// another process that got its PID.
    start_time: u64,
}

const _: () = assert!(size_of::<OwnerValue>() == 16);

// SAFETY: `#[repr(C)]`, integers, no implicit padding (4 + 4 + 8 = 16
// bytes), so every bit pattern is a valid value.
unsafe impl aya::Pod for OwnerValue {}

impl OwnerValue {
    fn of_process(pid: u32) -> OwnerValue {
        OwnerValue {
            pid,
            pad: 0,
            start_time: process_start_time(pid).unwrap_or(0),
        }
    }

    /// Whether the recorded process still runs (same PID, same start time).
    fn is_alive(&self) -> bool {
        self.pid != 0 && process_start_time(self.pid) == Some(self.start_time)
    }
}

/// Start time of process `pid` in clock ticks after boot (field 22 of
/// `/proc/<pid>/stat`); `None` if there is no such process.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // after it start behind the last ')'. Field 3 is the first one there.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// The pid of the live process that owns the XDP state pinned in
/// `pin_dir` (its owner record names it and it still runs), if any.
pub fn pinned_owner(pin_dir: &Path) -> Option<u32> {
    read_owner(pin_dir)
        .filter(OwnerValue::is_alive)
        .map(|owner| owner.pid)
}

/// The owner record pinned in `dir`, if readable.
fn read_owner(dir: &Path) -> Option<OwnerValue> {
    let data = MapData::from_pin(dir.join(OWNER_MAP_NAME)).ok()?;
    let map = Map::from_map_data(data).ok()?;
    let owner: Array<MapData, OwnerValue> = Array::try_from(map).ok()?;
    owner.get(&0, 0).ok()
}

/// `<pin_dir>/link-<interface>`.
fn link_pin_path(pin_dir: &Path, interface: &str) -> PathBuf {
    pin_dir.join(format!("{LINK_PIN_PREFIX}{interface}"))
}

/// Removes a pin, logging a failure other than its absence.
fn remove_pin(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        log::warn!("cannot remove the pin {}: {e}", path.display());
    }
}

/// Removes every pin of ours in `dir`, then `dir` itself if empty.
fn remove_pin_dir(dir: &Path) {
    for layout in &PINNED_MAPS {
        remove_pin(&dir.join(layout.name));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(LINK_PIN_PREFIX) {
                remove_pin(&entry.path());
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => log::info!("removed the XDP pins in {}", dir.display()),
        Err(e) => log::warn!("cannot remove the pin directory {}: {e}", dir.display()),
    }
}

/// Creates `dir` if needed and checks it is on a bpf filesystem.
fn prepare_pin_dir(dir: &Path) -> Result<(), BpfError> {
    let error = |detail: String| BpfError::Pin {
        path: dir.to_path_buf(),
        detail,
    };
    if !dir.is_absolute() {
        return Err(error("must be an absolute path".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        error(format!(
            "cannot create it ({e}); it must be on a bpf filesystem (`mount -t bpf bpf \
             /sys/fs/bpf`)"
        ))
    })?;
    let magic = crate::io::preflight::fs_magic(dir).map_err(|e| error(format!("statfs: {e}")))?;
    if magic != crate::io::preflight::BPF_FS_MAGIC {
        return Err(error(
            "is not on a bpf filesystem: mount one (`mount -t bpf bpf /sys/fs/bpf`) and put \
             pin_dir under it, e.g. /sys/fs/bpf/xorlay/<name>"
                .into(),
        ));
    }
    Ok(())
}

/// What [`survey_pin_dir`] leaves in a pin directory.
struct Survey {
    /// The owner record, if present and readable.
    owner: Option<OwnerValue>,
    /// Whether state maps are pinned (to be reused).
    maps_present: bool,
    /// Interfaces with a pinned XDP link.
    links: Vec<String>,
}

/// Checks what is pinned in `dir` and removes what cannot be reused, saying
/// why: maps whose layout is not this build's (then all maps go: their
/// state belongs together), unknown `xorlay_*` entries, `link-*` entries
/// that are no XDP links. Anything else is not xorlay's: refused.
fn survey_pin_dir(dir: &Path) -> Result<Survey, BpfError> {
    let entries = std::fs::read_dir(dir).map_err(|e| BpfError::Pin {
        path: dir.to_path_buf(),
        detail: format!("cannot list it: {e}"),
    })?;
    let mut names: Vec<String> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| BpfError::Pin {
            path: dir.to_path_buf(),
            detail: format!("cannot list it: {e}"),
        })?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    let mut mismatch: Vec<String> = Vec::new();
    let mut links = Vec::new();
    let mut maps_present = false;
    for name in names {
        let path = dir.join(&name);
        if let Some(expected) = PINNED_MAPS.iter().find(|l| l.name == name) {
            match pinned_layout(&path) {
                Ok(found)
                    if MapLayout {
                        name: expected.name,
                        ..found
                    } == *expected =>
                {
                    maps_present |= expected.name != OWNER_MAP_NAME;
                }
                Ok(found) => mismatch.push(format!(
                    "{name} is a {:?} with {}-byte keys, {}-byte values and {} entries, this \
                     build has a {:?} with {}, {} and {}",
                    found.map_type,
                    found.key_size,
                    found.value_size,
                    found.max_entries,
                    expected.map_type,
                    expected.key_size,
                    expected.value_size,
                    expected.max_entries
                )),
                Err(detail) => mismatch.push(format!("{name} is not a readable map ({detail})")),
            }
        } else if let Some(interface) = name.strip_prefix(LINK_PIN_PREFIX) {
            let is_xdp_link = PinnedLink::from_pin(&path)
                .ok()
                .map(FdLink::from)
                .and_then(|link| link.info().ok())
                .and_then(|info| info.link_type().ok())
                == Some(aya::programs::links::LinkType::Xdp);
            if is_xdp_link {
                links.push(interface.to_string());
            } else {
                log::warn!(
                    "clearing {}: not a pinned XDP link (left by another build or by hand)",
                    path.display()
                );
                remove_pin(&path);
            }
        } else if name.starts_with("xorlay_") {
            log::warn!(
                "clearing {}: not a map this build pins (left by another build)",
                path.display()
            );
            remove_pin(&path);
        } else {
            return Err(BpfError::Pin {
                path,
                detail: "xorlay did not make this entry; give pin_dir a directory of its own \
                         (e.g. /sys/fs/bpf/xorlay/<name>), or remove the entry"
                    .into(),
            });
        }
    }
    if !mismatch.is_empty() {
        log::warn!(
            "clearing the pinned XDP maps in {} (their state cannot be trusted, starting with \
             empty maps): {}",
            dir.display(),
            mismatch.join("; ")
        );
        for layout in &PINNED_MAPS {
            remove_pin(&dir.join(layout.name));
        }
        maps_present = false;
    }
    let owner = if maps_present { read_owner(dir) } else { None };
    Ok(Survey {
        owner,
        maps_present,
        links,
    })
}

// The router moves to whichever thread owns the data plane.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<XdpRouter>();
};

impl Drop for XdpRouter {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// Logs a warning if IPv4 or IPv6 forwarding is off on `interface`: the
/// kernel's FIB lookup (`bpf_fib_lookup`) then refuses every packet arriving
/// on it, so the fast path never forwards from it (counted as
/// `pass_unresolved`; the workers forward instead).
fn warn_without_forwarding(interface: &str) {
    for family in ["ipv4", "ipv6"] {
        let path = format!("/proc/sys/net/{family}/conf/{interface}/forwarding");
        if let Ok(text) = std::fs::read_to_string(&path)
            && text.trim() == "0"
        {
            log::warn!(
                "{family} forwarding is off on {interface}: the XDP fast path cannot forward \
                 {family} packets arriving on it (they take the userspace path); enable it with \
                 `sysctl -w net.{family}.conf.{interface}.forwarding=1` (for IPv6 this also \
                 stops accepting router advertisements on it unless accept_ra = 2)"
            );
        }
    }
}

/// The XDP program of a loaded object.
fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, BpfError> {
    let missing = BpfError::MissingObject {
        kind: "program",
        name: PROGRAM_NAME,
    };
    let program = ebpf.program_mut(PROGRAM_NAME).ok_or(missing)?;
    program.try_into().map_err(|_| BpfError::MissingObject {
        kind: "XDP program",
        name: PROGRAM_NAME,
    })
}

/// The index of `interface` in the calling thread's network namespace.
pub(crate) fn if_index(interface: &str) -> Result<u32, BpfError> {
    let missing = || BpfError::NoSuchInterface {
        interface: interface.to_string(),
    };
    let name = CString::new(interface).map_err(|_| missing())?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        Err(missing())
    } else {
        Ok(index)
    }
}

/// An error and its causes, joined by ": " (aya keeps the kernel's errno in
/// the source chain, not in the top-level message).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The errno of the first `io::Error` in an error's source chain.
fn chain_errno(error: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(errno) = e
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            return Some(errno);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_round_trip_through_the_array() {
        let values: [u64; STAT_COUNT] = std::array::from_fn(|i| 10 + i as u64);
        let counters = XdpCounters::from_array(&values);
        assert_eq!(counters.to_array(), values);
        for (index, value) in (0u32..).zip(values) {
            assert_eq!(counters.get(index), value, "index {index}");
        }
        assert_eq!(counters.get(STAT_COUNT as u32), 0);
        assert_eq!(counters.get(u32::MAX), 0);
    }

    #[test]
    fn counters_fields_follow_consts() {
        let mut values = [0u64; STAT_COUNT];
        values[consts::XDP_PASS_OTHER as usize] = 1;
        values[consts::XDP_PASS_OVERLAY as usize] = 2;
        values[consts::XDP_DROP_TRUNCATED as usize] = 3;
        values[consts::XDP_DROP_BAD_MAGIC as usize] = 4;
        values[consts::XDP_DROP_BAD_VERSION as usize] = 5;
        values[consts::XDP_DROP_BAD_TYPE as usize] = 6;
        values[consts::XDP_DROP_BAD_LENGTH as usize] = 7;
        values[consts::XDP_DROP_HOP_LIMIT_ZERO as usize] = 8;
        values[consts::XDP_DROP_NOT_NEIGHBOR as usize] = 9;
        let c = XdpCounters::from_array(&values);
        assert_eq!(
            (
                c.pass_other,
                c.pass_overlay,
                c.drop_truncated,
                c.drop_bad_magic
            ),
            (1, 2, 3, 4)
        );
        assert_eq!(
            (
                c.drop_bad_version,
                c.drop_bad_type,
                c.drop_bad_length,
                c.drop_hop_limit_zero
            ),
            (5, 6, 7, 8)
        );
        assert_eq!(c.drop_not_neighbor, 9);
        assert_eq!(c.dropped(), 3 + 4 + 5 + 6 + 7 + 8 + 9);

        let mut values = [0u64; STAT_COUNT];
        values[consts::XDP_DROP_HANDSHAKE_SOURCE_RATE as usize] = 1;
        values[consts::XDP_DROP_HANDSHAKE_GLOBAL_RATE as usize] = 2;
        values[consts::XDP_DROP_NEIGHBOR_RATE as usize] = 4;
        values[consts::XDP_DROP_NO_ROUTE as usize] = 8;
        values[consts::XDP_DROP_HOP_LIMIT_EXCEEDED as usize] = 16;
        values[consts::XDP_PASS_CACHE_MISS as usize] = 32;
        values[consts::XDP_PASS_UNRESOLVED as usize] = 64;
        values[consts::XDP_FWD_TX as usize] = 128;
        values[consts::XDP_FWD_REDIRECT as usize] = 256;
        let c = XdpCounters::from_array(&values);
        assert_eq!(
            (
                c.drop_handshake_source_rate,
                c.drop_handshake_global_rate,
                c.drop_neighbor_rate,
                c.drop_no_route,
                c.drop_hop_limit_exceeded
            ),
            (1, 2, 4, 8, 16)
        );
        assert_eq!(
            (
                c.pass_cache_miss,
                c.pass_unresolved,
                c.fwd_tx,
                c.fwd_redirect
            ),
            (32, 64, 128, 256)
        );
        assert_eq!(c.dropped(), 1 + 2 + 4 + 8 + 16);
        assert_eq!(c.forwarded(), 128 + 256);
        assert_eq!(c.passed_to_workers(), 32 + 64);
        assert_eq!(c.to_array(), values);
    }

    #[test]
    fn rate_limits_need_a_burst() {
        assert_eq!(RateLimits::default().check().ok(), Some(()));
        assert_eq!(RateLimits::UNLIMITED.check().ok(), Some(()));
        let mut limits = RateLimits {
            handshake_global: RateLimit::new(10, 0),
            ..RateLimits::default()
        };
        let message = limits
            .check()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("handshake_global"), "{message}");
        assert!(message.contains("burst of at least 1"), "{message}");
        limits.handshake_global = RateLimit::new(0, 0);
        assert_eq!(limits.check().ok(), Some(()));
    }

    #[test]
    fn config_value_follows_the_limits() {
        let limits = RateLimits {
            handshake_per_source: RateLimit::new(1, 2),
            handshake_global: RateLimit::new(3, 4),
            neighbor_data: RateLimit::new(5, 6),
        };
        let value = ConfigValue::new(&limits, Duration::from_millis(1500));
        assert_eq!(value.limits(), limits);
        assert_eq!(value.idle_timeout_ns, 1_500_000_000);
        assert_eq!(value.generation, 1);
        assert_eq!(value.flags, 0, "no local ID: the cache is off");
        let mut forever = value;
        forever.set_idle_timeout(Duration::MAX);
        assert_eq!(forever.idle_timeout_ns, u64::MAX);
    }

    #[test]
    fn bursts_below_a_clock_step_are_raised_to_it() {
        const STEP: u64 = 4_000_000; // HZ = 250
        for (given, enforced, why) in [
            (
                (1_000_000, 100),
                (1_000_000, 4_000),
                "4,000 tokens per 4 ms step",
            ),
            (
                (1_000_000, 100_000),
                (1_000_000, 100_000),
                "a step's worth or more stays",
            ),
            ((4, 8), (4, 8), "slow rates keep their burst"),
            ((300, 1), (300, 2), "1.2 tokens per step, rounded up"),
            ((0, 0), (0, 0), "no rate: untouched"),
        ] {
            assert_eq!(
                RateLimit::new(given.0, given.1).for_clock_step(STEP),
                RateLimit::new(enforced.0, enforced.1),
                "{why}"
            );
        }
        // Huge products saturate.
        assert_eq!(
            RateLimit::new(u32::MAX, 1)
                .for_clock_step(10_000_000_000)
                .burst,
            u32::MAX
        );
        // The defaults need no raising on any tick length Linux has.
        let defaults = RateLimits::default();
        assert_eq!(defaults.for_clock_step(10_000_000), defaults);
        // The step the program's clock moves in: 1 to 10 ms.
        assert!((1_000_000..=10_000_000).contains(&clock_step_ns()));
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0);
        assert!(b >= a);
    }

    #[test]
    fn neighbor_key_normalizes_ipv4() {
        let v4: SocketAddr = "198.18.0.2:4799".parse().expect("literal");
        let mapped: SocketAddr = "[::ffff:198.18.0.2]:4799".parse().expect("literal");
        let key = neighbor_key(&v4);
        assert_eq!(key, neighbor_key(&mapped));
        assert_eq!(
            key.addr,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 2]
        );
        assert_eq!(key.port, [0, 0], "admitted by IP: any source port");
        assert_eq!(key.pad, 0);
        assert_eq!(key.socket_addr(), "198.18.0.2:0".parse().expect("literal"));
        assert_eq!(
            key,
            neighbor_key(&"198.18.0.2:4800".parse().expect("literal"))
        );
        assert_ne!(
            key,
            neighbor_key(&"198.18.0.3:4799".parse().expect("literal"))
        );
    }

    #[test]
    fn neighbor_key_keeps_ipv6_without_scope() {
        let v6: SocketAddr = "[fd00::1]:4799".parse().expect("literal");
        let scoped = SocketAddr::V6(SocketAddrV6::new(
            "fd00::1".parse().expect("literal"),
            4799,
            7,
            3,
        ));
        assert_eq!(neighbor_key(&v6), neighbor_key(&scoped));
        assert_eq!(
            neighbor_key(&v6).socket_addr(),
            "[fd00::1]:0".parse().expect("literal")
        );
        assert_eq!(
            neighbor_key(&v6).ip(),
            "fd00::1".parse::<Ipv6Addr>().expect("literal")
        );
    }

    #[test]
    fn owner_liveness_needs_the_same_process() {
        let me = OwnerValue::of_process(std::process::id());
        assert!(me.start_time > 0);
        assert!(me.is_alive());
        let reused = OwnerValue {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!reused.is_alive(), "same PID, other start time");
        assert!(!OwnerValue::of_process(0).is_alive());
        assert_eq!(process_start_time(u32::MAX), None);
    }

    #[test]
    fn load_options_filter_by_default() {
        assert!(LoadOptions::default().filter_neighbors);
    }

    #[test]
    fn every_drop_reason_has_a_field() {
        for reason in crate::wire::OverlayError::ALL {
            let mut values = [0u64; STAT_COUNT];
            let index = reason.xdp_stat() as usize;
            values[index] = 1;
            let counters = XdpCounters::from_array(&values);
            assert_eq!(counters.dropped(), 1, "{reason}");
            assert_eq!(counters.get(reason.xdp_stat()), 1, "{reason}");
        }
    }

    #[test]
    fn attach_mode_config_spelling() {
        #[derive(Deserialize)]
        struct Wrapper {
            mode: XdpAttachMode,
        }
        for mode in [
            XdpAttachMode::Native,
            XdpAttachMode::Generic,
            XdpAttachMode::Auto,
        ] {
            let text = format!("mode = \"{mode}\"");
            let parsed: Wrapper = match toml::from_str(&text) {
                Ok(parsed) => parsed,
                Err(e) => panic!("{text}: {e}"),
            };
            assert_eq!(parsed.mode, mode);
        }
        assert!(toml::from_str::<Wrapper>("mode = \"Native\"").is_err());
        assert!(toml::from_str::<Wrapper>("mode = \"skb\"").is_err());
        assert_eq!(XdpAttachMode::default(), XdpAttachMode::Native);
    }

    #[test]
    fn missing_interface_is_named() {
        let error = if_index("xlt-no-such0").err();
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("interface xlt-no-such0 does not exist"),
            "{message}"
        );
        assert!(if_index("bad\0name").is_err());
    }

    #[test]
    fn chain_keeps_the_errno() {
        let inner = io::Error::from_raw_os_error(libc::EPERM);
        let outer = aya::programs::ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_prog_load",
            io_error: inner,
        });
        assert_eq!(chain_errno(&outer), Some(libc::EPERM));
        let text = chain(&outer);
        assert!(text.contains("bpf_prog_load"), "{text}");
        assert!(text.contains("os error 1"), "{text}");
    }
}
