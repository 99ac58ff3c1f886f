//! Loads the XDP program (`ebpf/xorlay.bpf.c`, compiled by `build.rs` and
//! embedded here), attaches it to the underlay interfaces, reads its per-CPU
//! counters and keeps its neighbor allowlist.
//!
//! The program validates overlay packets on the configured UDP port and drops
//! malformed ones by reason; then it drops data packets whose source (IP, UDP
//! port) is not in the `xorlay_neighbors` map (control packets always pass:
//! strangers must be able to handshake). Every frame it sees increments
//! exactly one counter of the `xorlay_stats` map, indexed by the
//! `XORLAY_XDP_*` constants of `ebpf/consts.h` ([`consts`]).
//!
//! [`load`] and [`load_with`] give a loaded, unattached program (the fixture
//! tests run it with `BPF_PROG_TEST_RUN`); [`XdpRouter`] owns a loaded program
//! and its attachments, and detaches them all when dropped. The allowlist is
//! a [`NeighborMap`], taken out of the loaded object
//! ([`XdpRouter::take_neighbor_map`], [`take_neighbor_map`]) so the control
//! thread owns it apart from the counters; [`NeighborMap::sync`] makes it
//! equal to the set of neighbors with an authenticated session.

use std::collections::HashSet;
use std::ffi::CString;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};

use aya::maps::{HashMap, MapData, PerCpuArray};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{ProgramError, Xdp, XdpMode};
use aya::{Ebpf, EbpfError, EbpfLoader};
use serde::{Deserialize, Serialize};

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

// `XdpCounters` has one field per counter; a new counter in consts.h must add
// a field (and its index below).
const _: () = assert!(STAT_COUNT == 9);
const _: () = assert!(consts::XDP_PASS_OTHER < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_PASS_OVERLAY < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_DROP_TRUNCATED < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_DROP_BAD_MAGIC < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_DROP_BAD_VERSION < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_DROP_BAD_TYPE < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_DROP_BAD_LENGTH < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_DROP_HOP_LIMIT_ZERO < consts::XDP_STAT_COUNT);
const _: () = assert!(consts::XDP_DROP_NOT_NEIGHBOR < consts::XDP_STAT_COUNT);

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
    /// The kernel refused for lack of privileges.
    #[error(
        "{action} was refused ({detail}): xorlay needs root or CAP_BPF + CAP_NET_ADMIN for XDP; \
         run it as root, or grant them (systemd: AmbientCapabilities=CAP_BPF CAP_NET_ADMIN; \
         otherwise `setcap cap_bpf,cap_net_admin+ep` on the binary)"
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
    fn from_attach(error: &ProgramError, interface: &str, mode: AttachedMode) -> BpfError {
        let detail = chain(error);
        let interface = interface.to_string();
        match chain_errno(error) {
            Some(libc::EPERM) => BpfError::PermissionDenied {
                action: "attaching the XDP program",
                detail,
            },
            Some(libc::EBUSY | libc::EEXIST) => BpfError::InterfaceBusy {
                interface,
                mode: mode.name(),
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
    }
}

/// How the program is loaded, beyond its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Drop data packets whose source is not in the neighbor allowlist
    /// (default). Off, the program validates only: for tests of validation
    /// alone and for debugging.
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
/// packet passes until it is filled ([`NeighborMap::sync`]).
pub fn load_with(port: u16, options: LoadOptions) -> Result<Ebpf, BpfError> {
    let filter = u8::from(options.filter_neighbors);
    let mut ebpf = EbpfLoader::new()
        .override_global(PORT_GLOBAL_NAME, &port, true)
        .override_global(FILTER_GLOBAL_NAME, &filter, true)
        .load(XDP_OBJECT)
        .map_err(|e| BpfError::from_object(&e))?;
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
/// make keys with [`neighbor_key`].
#[repr(C, align(4))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NeighborKey {
    /// IPv6 address, or the v4-mapped form of an IPv4 address.
    addr: [u8; 16],
    /// UDP port, big endian (`__be16`).
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

/// The allowlist key of a neighbor at `addr`: IPv4 and its v4-mapped IPv6
/// form give the same key; an IPv6 scope ID and flow label are ignored.
pub fn neighbor_key(addr: &SocketAddr) -> NeighborKey {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    NeighborKey {
        addr: ip.octets(),
        port: addr.port().to_be_bytes(),
        pad: 0,
    }
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
#[derive(Debug)]
pub struct NeighborMap {
    map: HashMap<MapData, NeighborKey, u32>,
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
    let map = HashMap::try_from(map).map_err(|e| BpfError::NeighborMap {
        action: "open",
        detail: chain(&e),
    })?;
    Ok(NeighborMap { map })
}

impl NeighborMap {
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
            self.map.insert(key, 0u32, 0).map_err(update_error)?;
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

/// The loaded XDP program and its attachments. Dropping it (or
/// [`XdpRouter::detach`]) detaches the program from every interface.
#[derive(Debug)]
pub struct XdpRouter {
    ebpf: Ebpf,
    attachments: Vec<Attachment>,
}

#[derive(Debug)]
struct Attachment {
    interface: String,
    mode: AttachedMode,
    link: XdpLinkId,
}

impl XdpRouter {
    /// Loads the program for overlay port `port`, the neighbor filter on,
    /// and attaches it to every interface of `interfaces` (names resolved in
    /// the calling thread's network namespace) in `mode`. All interfaces are
    /// checked before anything is loaded; an interface listed twice is
    /// attached once; if one attach fails, those already made are undone.
    ///
    /// The allowlist starts empty: no data packet passes XDP until it is
    /// filled through [`XdpRouter::take_neighbor_map`].
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
        let mut targets: Vec<(&str, u32)> = Vec::with_capacity(interfaces.len());
        for interface in interfaces {
            let if_index = if_index(interface)?;
            if targets.iter().all(|&(_, seen)| seen != if_index) {
                targets.push((interface, if_index));
            }
        }
        let ebpf = load_with(port, options)?;
        let mut router = XdpRouter {
            ebpf,
            attachments: Vec::with_capacity(targets.len()),
        };
        for (interface, if_index) in targets {
            router.attach_one(interface, if_index, mode)?;
        }
        Ok(router)
    }

    fn attach_one(
        &mut self,
        interface: &str,
        if_index: u32,
        mode: XdpAttachMode,
    ) -> Result<(), BpfError> {
        let program = xdp_program(&mut self.ebpf)?;
        let attempt = |program: &mut Xdp, mode: AttachedMode| {
            program
                .attach_to_if_index(if_index, mode.aya())
                .map(|link| (link, mode))
                .map_err(|e| BpfError::from_attach(&e, interface, mode))
        };
        let (link, attached) = match mode {
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
        log::info!("XDP attached to {interface} in {} mode", attached.name());
        self.attachments.push(Attachment {
            interface: interface.to_string(),
            mode: attached,
            link,
        });
        Ok(())
    }

    /// Every interface the program is attached to, with its mode ("native" or
    /// "generic").
    pub fn attached(&self) -> Vec<(String, &'static str)> {
        self.attachments
            .iter()
            .map(|a| (a.interface.clone(), a.mode.name()))
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

    /// Detaches the program from every interface and unloads it. Failures
    /// are logged (there is nothing else to do about them at shutdown).
    pub fn detach(self) {
        drop(self);
    }

    fn detach_all(&mut self) {
        if self.attachments.is_empty() {
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
        for attachment in self.attachments.drain(..) {
            match program.detach(attachment.link) {
                Ok(()) => log::info!("XDP detached from {}", attachment.interface),
                Err(error) => log::warn!(
                    "detaching XDP from {}: {}; `ip link set dev {} xdp off` removes it",
                    attachment.interface,
                    chain(&error),
                    attachment.interface
                ),
            }
        }
    }
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
fn if_index(interface: &str) -> Result<u32, BpfError> {
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
        let values: [u64; STAT_COUNT] = [10, 11, 12, 13, 14, 15, 16, 17, 18];
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
        assert_eq!(key.port, [0x12, 0xbf], "big endian");
        assert_eq!(key.pad, 0);
        assert_eq!(key.port(), 4799);
        assert_eq!(key.socket_addr(), v4);
        assert_ne!(
            key,
            neighbor_key(&"198.18.0.2:4800".parse().expect("literal"))
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
        assert_eq!(neighbor_key(&v6).socket_addr(), v6);
        assert_eq!(
            neighbor_key(&v6).ip(),
            "fd00::1".parse::<Ipv6Addr>().expect("literal")
        );
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
