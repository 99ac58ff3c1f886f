//! The router's TOML configuration: parsed, then validated into a [`Config`]
//! whose every field is usable as is. Errors name the key and the fix.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::NodeId;
use crate::wire::overlay::DEFAULT_PORT;

/// Most seeds and neighbors configured by host name (each is resolved
/// again on every re-bootstrap, on the control plane's resolver thread).
pub const NAMED_PEERS_MAX: usize = 256;
/// Most neighbors a static list may hold (the table bound until Kademlia).
pub const NEIGHBORS_MAX: usize = 4096;
/// Most worker threads (`XORLAY_WORKERS_MAX` of ebpf/consts.h: the
/// workers the XDP credits and the steering program have room for).
pub const WORKERS_MAX: usize = crate::wire::consts::WORKERS_MAX;

/// The router configuration, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Path of the node's secret key file (`xorlay keygen --out`).
    pub key_file: PathBuf,
    /// Address the workers' sockets bind; its port is the overlay port.
    pub listen: SocketAddr,
    /// Interfaces the XDP program is attached to.
    pub interfaces: Vec<String>,
    /// How XDP is attached.
    pub xdp_mode: XdpAttachMode,
    /// Data-plane settings.
    pub dataplane: Dataplane,
    /// Unix socket path of the admin interface (`xorlay stats`).
    pub admin_socket: PathBuf,
    /// Known peers (ID and address), connected at start like seeds but
    /// with the ID checked.
    pub neighbors: Vec<Neighbor>,
    /// Control-plane settings.
    pub control: Control,
    /// The XDP program's fast path and rate limits.
    pub xdp: XdpSettings,
}

/// The XDP program's fast path and rate limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XdpSettings {
    /// Forward cached destinations in XDP (the in-kernel route cache).
    pub route_cache: bool,
    /// A cached route unused this long is no longer used.
    pub route_idle_timeout_ms: u64,
    /// Token buckets: handshakes per source and overall, data per neighbor.
    pub limits: RateLimits,
    /// Directory on a bpf filesystem where the XDP state (maps, the link of
    /// each interface, the owner) is pinned, so the next `xorlay run` takes
    /// over without losing fast-path packets; unset: nothing is pinned and
    /// XDP is detached at exit (docs/xdp.md, "Lifecycle").
    pub pin_dir: Option<PathBuf>,
    /// After taking over pinned state, how long the control plane only adds
    /// to the allowlist and keeps the route cache valid while its sessions
    /// come back (ends early once it has as many authenticated peers as the
    /// allowlist had).
    pub warm_start_ms: u64,
    /// Shed load in XDP while the workers' sockets overflow (a budget of
    /// data packets to the workers, measured and adjusted every 100 ms;
    /// docs/xdp.md, "Load shedding"). Off: every packet for the workers is
    /// passed, and beyond their capacity the kernel drops them after
    /// building an skb for each.
    pub shed: bool,
}

impl Default for XdpSettings {
    fn default() -> XdpSettings {
        XdpSettings {
            route_cache: true,
            route_idle_timeout_ms: 30_000,
            limits: RateLimits::default(),
            pin_dir: None,
            warm_start_ms: 5_000,
            shed: true,
        }
    }
}

/// Control-plane settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Control {
    /// Underlay addresses of seed nodes to bootstrap from (their IDs need
    /// not be known): `IP:PORT`, or `HOST:PORT` resolved at start and on
    /// every re-bootstrap.
    #[serde(deserialize_with = "seeds")]
    pub seeds: Vec<Endpoint>,
    /// Kademlia bucket size.
    pub k: usize,
    /// S/Kademlia puzzle: leading zero bits every node ID (this one included) must show.
    pub difficulty: u32,
    /// Where good peers are kept across restarts (unset: not kept).
    pub peers_file: Option<PathBuf>,
    /// A session sends a keepalive after this long without sending.
    pub keepalive_ms: u64,
    /// A session is dead after this long without hearing from the peer.
    pub dead_after_ms: u64,
    /// Most contacts per IPv4 /24 or IPv6 /64 in one bucket.
    pub subnet_bucket_max: usize,
    /// Most contacts per IPv4 /24 or IPv6 /64 in the whole table.
    pub subnet_table_max: usize,
    /// Routing's beacon level (docs/routing.md): 0 is plain distance
    /// vector (a route to every router); about log2(routers) / 2 keeps
    /// about sqrt(routers) routes per router, with the location service.
    /// The whole overlay uses the same level.
    pub beacon_level: u8,
}

/// Highest `control.beacon_level`: one beacon in 2^16 routers is already
/// beyond any overlay's size.
pub const BEACON_LEVEL_MAX: u8 = 16;

impl Default for Control {
    fn default() -> Control {
        Control {
            seeds: Vec::new(),
            k: 16,
            difficulty: 0,
            peers_file: None,
            keepalive_ms: 250,
            dead_after_ms: 1000,
            subnet_bucket_max: 2,
            subnet_table_max: 10,
            beacon_level: 0,
        }
    }
}

/// Data-plane settings (`[dataplane]`): the one definition of each worker
/// setting, its default and its limits. The workers take them as they are
/// (`io::worker::WorkerConfig` adds only `underlay.listen`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dataplane {
    /// io_uring worker threads; 0 means one per CPU.
    pub workers: usize,
    /// io_uring submission queue entries per worker, a power of two.
    pub ring_entries: u32,
    /// Provided receive buffers per worker, a power of two (also the bound
    /// on sends in flight: each send pins one buffer).
    pub buffer_count: u16,
    /// Bytes per receive buffer, including `io::worker::PAYLOAD_OFFSET`
    /// bytes of receive metadata; 2048 fits a 1500-byte MTU datagram.
    pub buffer_size: u32,
    /// Socket receive and send buffer size: `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`
    /// as root, else `SO_RCVBUF`/`SO_SNDBUF` (capped by `net.core.*mem_max`).
    pub recv_buffer_bytes: usize,
    /// The local application's UDP address, if any: packets for this node
    /// go there (whole overlay packet), and data packets from there are
    /// originated by this node (routed without the neighbor check).
    pub app: Option<SocketAddr>,
    /// Most XDP route-cache install requests per second per worker (0:
    /// none are made).
    pub installs_per_sec: u32,
    /// Send the datagrams of a batch that go to the same neighbor with the
    /// same length as one UDP GSO send (`UDP_SEGMENT`). Falls back to one
    /// send per datagram by itself where the kernel refuses it.
    pub gso: bool,
    /// Nice value of the worker threads (-20 to 19). Below 0 the scheduler
    /// favours the workers over the kernel's receive threads (threaded NAPI,
    /// ksoftirqd) on a shared CPU, so under overload the CPU goes to the
    /// packets already admitted, not to receiving more (docs/architecture.md,
    /// "Worker priority"). Needs CAP_SYS_NICE below 0; without it a worker
    /// runs at the nice it inherited and says so.
    pub worker_nice: i32,
}

impl Default for Dataplane {
    fn default() -> Dataplane {
        Dataplane {
            workers: 0,
            ring_entries: 1024,
            buffer_count: 4096,
            buffer_size: 2048,
            recv_buffer_bytes: 4 << 20,
            app: None,
            installs_per_sec: 10_000,
            gso: true,
            worker_nice: -10,
        }
    }
}

/// Smallest and largest `dataplane.buffer_size`.
pub const BUFFER_SIZE_MIN: u32 = 256;
/// See [`BUFFER_SIZE_MIN`].
pub const BUFFER_SIZE_MAX: u32 = 65536;
/// Most provided buffers per worker (`dataplane.buffer_count`): the
/// kernel's buffer-ring limit.
pub const BUFFER_COUNT_MAX: u16 = 32768;
/// Smallest and largest `dataplane.ring_entries`.
pub const RING_ENTRIES_MIN: u32 = 8;
/// See [`RING_ENTRIES_MIN`].
pub const RING_ENTRIES_MAX: u32 = 32768;
/// Nice values Linux accepts (`dataplane.worker_nice`).
pub const NICE_RANGE: std::ops::RangeInclusive<i32> = -20..=19;

/// A `[dataplane]` setting out of range: the key, and the value with what
/// is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dataplane.{key} = {message}")]
pub struct SettingError {
    /// The `[dataplane]` key.
    pub key: &'static str,
    /// The value and the allowed range.
    pub message: String,
}

impl Dataplane {
    /// Checks every limit the workers rely on, for sockets bound to
    /// `listen` (`underlay.listen`). Messages name the key.
    pub fn check(&self, listen: SocketAddr) -> Result<(), SettingError> {
        let invalid = |key: &'static str, message: String| Err(SettingError { key, message });
        if self.workers > WORKERS_MAX {
            return invalid(
                "workers",
                format!(
                    "{} is over the limit of {WORKERS_MAX}; use 0 for one per CPU",
                    self.workers
                ),
            );
        }
        if !self.buffer_count.is_power_of_two() || self.buffer_count > BUFFER_COUNT_MAX {
            return invalid(
                "buffer_count",
                format!(
                    "{} must be a power of two from 1 to {BUFFER_COUNT_MAX} (e.g. 4096)",
                    self.buffer_count
                ),
            );
        }
        if !NICE_RANGE.contains(&self.worker_nice) {
            return invalid(
                "worker_nice",
                format!(
                    "{} must be from -20 (most favoured) to 19; -10 (the default) favours the workers over the kernel's receive threads",
                    self.worker_nice
                ),
            );
        }
        if !(BUFFER_SIZE_MIN..=BUFFER_SIZE_MAX).contains(&self.buffer_size) {
            return invalid(
                "buffer_size",
                format!(
                    "{} must be {BUFFER_SIZE_MIN} to {BUFFER_SIZE_MAX} bytes (2048 fits a 1500-byte MTU)",
                    self.buffer_size
                ),
            );
        }
        if !(RING_ENTRIES_MIN..=RING_ENTRIES_MAX).contains(&self.ring_entries)
            || !self.ring_entries.is_power_of_two()
        {
            return invalid(
                "ring_entries",
                format!(
                    "{} must be a power of two from {RING_ENTRIES_MIN} to {RING_ENTRIES_MAX} (e.g. 1024)",
                    self.ring_entries
                ),
            );
        }
        if let Some(addr) = self.app
            && listen.is_ipv4()
            && addr.is_ipv6()
        {
            return invalid(
                "app",
                format!(
                    "\"{addr}\" is IPv6 but underlay.listen \"{listen}\" is IPv4; listen on \"[::]:{}\" or deliver to an IPv4 address",
                    listen.port()
                ),
            );
        }
        Ok(())
    }
}

/// A statically configured neighbor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Neighbor {
    /// Its node ID (64 hex digits).
    pub id: NodeId,
    /// Its underlay address and overlay port (`IP:PORT` or `HOST:PORT`).
    #[serde(deserialize_with = "neighbor_address")]
    pub address: Endpoint,
}

/// An underlay address as configured: a socket address, or a host name and
/// a port, resolved by the control plane at start and on every
/// re-bootstrap.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `IP:PORT` (`[IPv6]:PORT`).
    Addr(SocketAddr),
    /// `HOST:PORT`.
    Host {
        /// The host name.
        host: String,
        /// The port.
        port: u16,
    },
}

impl Endpoint {
    /// Parses `IP:PORT`, `[IPv6]:PORT` or `HOST:PORT`; the error says what
    /// is wrong and how to write it.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Endpoint::Addr(addr));
        }
        if let Ok(ip) = text.parse::<std::net::IpAddr>() {
            return Err(match ip {
                std::net::IpAddr::V4(_) => format!("missing port; write {ip}:PORT"),
                std::net::IpAddr::V6(_) => format!("missing port; write [{ip}]:PORT"),
            });
        }
        let bare = text.trim_start_matches('[').trim_end_matches(']');
        if bare.parse::<std::net::Ipv6Addr>().is_ok() {
            return Err(format!("missing port; write [{bare}]:PORT"));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return if valid_host(text) {
                Err(format!("missing port; write {text}:PORT"))
            } else {
                Err("not an address; write IP:PORT, [IPv6]:PORT or HOST:PORT".into())
            };
        };
        if host.contains(':') || host.starts_with('[') {
            return Err("not an address; an IPv6 address goes in brackets: [IPv6]:PORT".into());
        }
        let port: u16 = match port.parse() {
            Ok(0) | Err(_) => {
                return Err(format!(
                    "port {port:?} is not a port number (1 to 65535); write {host}:PORT"
                ));
            }
            Ok(port) => port,
        };
        if !valid_host(host) {
            return Err(format!(
                "{host:?} is neither an IP address nor a host name (letters, digits, '-' and '.')"
            ));
        }
        Ok(Endpoint::Host {
            host: host.to_string(),
            port,
        })
    }

    /// The socket address, if written as one.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            Endpoint::Addr(addr) => Some(*addr),
            Endpoint::Host { .. } => None,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Addr(addr) => write!(f, "{addr}"),
            Endpoint::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// A DNS host name: labels of letters, digits and '-' (not at either end),
/// 1 to 63 characters each, 253 in all.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn seeds<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<Endpoint>, D::Error> {
    let texts: Vec<String> = Deserialize::deserialize(deserializer)?;
    texts
        .iter()
        .map(|text| {
            Endpoint::parse(text)
                .map_err(|e| serde::de::Error::custom(format!("seed {text:?}: {e}")))
        })
        .collect()
}

fn neighbor_address<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Endpoint, D::Error> {
    let text: String = Deserialize::deserialize(deserializer)?;
    Endpoint::parse(&text)
        .map_err(|e| serde::de::Error::custom(format!("neighbor address {text:?}: {e}")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    key_file: PathBuf,
    #[serde(default)]
    underlay: RawUnderlay,
    #[serde(default)]
    dataplane: Dataplane,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default, rename = "neighbor")]
    neighbors: Vec<Neighbor>,
    #[serde(default)]
    control: Control,
    #[serde(default)]
    xdp: XdpSettings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUnderlay {
    listen: SocketAddr,
    interfaces: Vec<String>,
    xdp_mode: XdpAttachMode,
}

impl Default for RawUnderlay {
    fn default() -> RawUnderlay {
        RawUnderlay {
            listen: SocketAddr::from(([0u16; 8], DEFAULT_PORT)),
            interfaces: Vec::new(),
            xdp_mode: XdpAttachMode::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAdmin {
    socket: PathBuf,
}

impl Default for RawAdmin {
    fn default() -> RawAdmin {
        RawAdmin {
            socket: PathBuf::from("/run/xorlay/xorlay.sock"),
        }
    }
}

/// Why a configuration is unusable. Each message names the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error(
        "cannot read config {path}: {source}; pass an existing file with --config (see deploy/xorlay.example.toml)"
    )]
    Read {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// TOML syntax or a wrong key/type.
    #[error("config {path}: {message}")]
    Parse {
        /// The path.
        path: PathBuf,
        /// toml's message, which shows the line.
        message: String,
    },
    /// A value that parses but cannot work.
    #[error("config {path}: {message}")]
    Invalid {
        /// The path.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `path` is used in messages and to
    /// resolve a relative `key_file`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " | "),
        })?;
        raw.check().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(raw.into_config(path))
    }

    /// Worker threads to start: the configured number, or one per CPU.
    pub fn worker_count(&self) -> usize {
        match self.dataplane.workers {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(WORKERS_MAX),
            n => n,
        }
    }
}

/// Validation of the parsed file, one section at a time, in the order the
/// errors are reported; each error is the message for
/// [`ConfigError::Invalid`].
impl RawConfig {
    /// Checks every section: underlay, dataplane, neighbors, control, the
    /// host-name bound, xdp.
    fn check(&self) -> Result<(), String> {
        let listen = self.underlay.listen;
        self.check_underlay()?;
        self.dataplane.check(listen).map_err(|e| e.to_string())?;
        self.check_neighbors()?;
        self.check_control()?;
        self.check_named_peers()?;
        self.check_xdp()
    }

    /// `[underlay]`: a fixed port, valid and distinct interface names.
    fn check_underlay(&self) -> Result<(), String> {
        let listen = self.underlay.listen;
        if listen.port() == 0 {
            return Err(format!(
                "underlay.listen = \"{listen}\" has port 0; the overlay needs a fixed UDP port, e.g. \"[::]:{DEFAULT_PORT}\""
            ));
        }
        for name in &self.underlay.interfaces {
            if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
                return Err(format!(
                    "underlay.interfaces has {name:?}, which is not a Linux interface name (1 to 15 characters, no '/' or spaces); `ip link` lists them"
                ));
            }
        }
        let mut interfaces = self.underlay.interfaces.clone();
        interfaces.sort();
        interfaces.dedup();
        if interfaces.len() != self.underlay.interfaces.len() {
            return Err(
                "underlay.interfaces lists an interface twice; remove the duplicate".into(),
            );
        }
        Ok(())
    }

    /// `[[neighbor]]`: at most [`NEIGHBORS_MAX`], each address one this node
    /// can send to.
    fn check_neighbors(&self) -> Result<(), String> {
        let listen = self.underlay.listen;
        if self.neighbors.len() > NEIGHBORS_MAX {
            return Err(format!(
                "{} neighbors listed; at most {NEIGHBORS_MAX} are allowed",
                self.neighbors.len()
            ));
        }
        for n in &self.neighbors {
            let Some(address) = n.address.addr() else {
                continue; // a host name: resolved at start, by family
            };
            if listen.is_ipv4() && address.is_ipv6() {
                return Err(format!(
                    "neighbor {} has IPv6 address {} but underlay.listen is IPv4; listen on \"[::]:{}\" to reach both families",
                    n.id,
                    address,
                    listen.port()
                ));
            }
            if address.port() == 0 || address.ip().is_unspecified() {
                return Err(format!(
                    "neighbor {} has address {}, which cannot be sent to; give its underlay IP and overlay port",
                    n.id, n.address
                ));
            }
        }
        Ok(())
    }

    /// `[control]`: the Kademlia and liveness parameters, and the seeds.
    fn check_control(&self) -> Result<(), String> {
        let listen = self.underlay.listen;
        let c = &self.control;
        if c.k == 0 || c.k > 64 {
            return Err(format!("control.k = {} must be 1 to 64 (16 is usual)", c.k));
        }
        if c.difficulty > crate::core::identity::DIFFICULTY_MAX {
            return Err(format!(
                "control.difficulty = {} is over {}; each bit doubles the key search",
                c.difficulty,
                crate::core::identity::DIFFICULTY_MAX
            ));
        }
        if c.beacon_level > BEACON_LEVEL_MAX {
            return Err(format!(
                "control.beacon_level = {} is over {BEACON_LEVEL_MAX}; about log2(routers) / 2 \
                 is right (8 for 100,000 routers), 0 for a plain distance vector",
                c.beacon_level
            ));
        }
        if c.keepalive_ms == 0 || c.dead_after_ms <= c.keepalive_ms * 2 {
            return Err(format!(
                "control.dead_after_ms = {} must exceed twice control.keepalive_ms = {} (> 0), or live peers are declared dead",
                c.dead_after_ms, c.keepalive_ms
            ));
        }
        if c.subnet_bucket_max == 0 || c.subnet_table_max < c.subnet_bucket_max {
            return Err(format!(
                "control.subnet_bucket_max = {} must be at least 1 and at most control.subnet_table_max = {}",
                c.subnet_bucket_max, c.subnet_table_max
            ));
        }
        if c.seeds.len() > NEIGHBORS_MAX {
            return Err(format!(
                "{} seeds listed; at most {NEIGHBORS_MAX}",
                c.seeds.len()
            ));
        }
        for seed in c.seeds.iter().filter_map(Endpoint::addr) {
            if seed.port() == 0
                || seed.ip().is_unspecified()
                || (listen.is_ipv4() && seed.is_ipv6())
            {
                return Err(format!(
                    "control.seeds has {seed}, which this node cannot send to; give the seed's underlay IP and overlay port{}",
                    if listen.is_ipv4() && seed.is_ipv6() {
                        " (and listen on \"[::]\" for IPv6)"
                    } else {
                        ""
                    }
                ));
            }
        }
        Ok(())
    }

    /// Seeds and neighbors given by host name: at most [`NAMED_PEERS_MAX`].
    fn check_named_peers(&self) -> Result<(), String> {
        let named = self
            .control
            .seeds
            .iter()
            .chain(self.neighbors.iter().map(|n| &n.address))
            .filter(|e| e.addr().is_none())
            .count();
        if named > NAMED_PEERS_MAX {
            return Err(format!(
                "{named} seeds and neighbors are given by host name; at most {NAMED_PEERS_MAX} are resolved: write IP addresses for the others"
            ));
        }
        Ok(())
    }

    /// `[xdp]`: the route timeout, the rate limits, the pin directory and
    /// the warm start.
    fn check_xdp(&self) -> Result<(), String> {
        let xdp = &self.xdp;
        if xdp.route_idle_timeout_ms == 0 || xdp.route_idle_timeout_ms > 3_600_000 {
            return Err(format!(
                "xdp.route_idle_timeout_ms = {} must be 1 to 3600000 (30000 is usual)",
                xdp.route_idle_timeout_ms
            ));
        }
        if let Err(e) = xdp.limits.check() {
            return Err(format!("xdp.limits: {e}"));
        }
        if let Some(dir) = &xdp.pin_dir
            && (!dir.is_absolute() || dir.parent().is_none())
        {
            return Err(format!(
                "xdp.pin_dir = {:?} must be an absolute directory of its own on a bpf filesystem, e.g. \"/sys/fs/bpf/xorlay/<name>\"",
                dir.display()
            ));
        }
        if xdp.warm_start_ms > 600_000 {
            return Err(format!(
                "xdp.warm_start_ms = {} must be at most 600000 (5000 is usual)",
                xdp.warm_start_ms
            ));
        }
        Ok(())
    }

    /// The checked file as a [`Config`], with `key_file` and
    /// `control.peers_file` resolved against the directory of `path` when
    /// relative.
    fn into_config(self, path: &Path) -> Config {
        let resolve = |p: &Path| match path.parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        };
        let mut control = self.control;
        control.peers_file = control.peers_file.as_deref().map(resolve);

        let key_file = match path.parent() {
            Some(dir) if self.key_file.is_relative() => dir.join(&self.key_file),
            _ => self.key_file,
        };

        Config {
            key_file,
            listen: self.underlay.listen,
            interfaces: self.underlay.interfaces,
            xdp_mode: self.underlay.xdp_mode,
            dataplane: self.dataplane,
            admin_socket: self.admin.socket,
            neighbors: self.neighbors,
            control,
            xdp: self.xdp,
        }
    }
}

/// A rate limit with a rate but no burst (`xdp.limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "XDP rate limit {name}: {pps} packets/s with a burst of {burst}: a nonzero rate needs a \
     burst of at least 1 (a rate of 0 turns the limit off)"
)]
pub struct RateLimitError {
    /// Which limit.
    pub name: &'static str,
    /// Its rate.
    pub pps: u32,
    /// Its burst.
    pub burst: u32,
}

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

    fn check(self, name: &'static str) -> Result<(), RateLimitError> {
        if self.pps != 0 && self.burst == 0 {
            return Err(RateLimitError {
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
    /// Data packets from one neighbor (its IP address, any UDP port), per
    /// CPU that receives its traffic (a neighbor's fast path sends from flow
    /// ports, so RSS may spread it over several).
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

    /// Each limit with its config key under `xdp.limits`.
    pub fn named(&self) -> [(&'static str, RateLimit); 3] {
        [
            ("handshake_per_source", self.handshake_per_source),
            ("handshake_global", self.handshake_global),
            ("neighbor_data", self.neighbor_data),
        ]
    }

    /// Each limit with a rate has a burst.
    pub fn check(&self) -> Result<(), RateLimitError> {
        self.named()
            .into_iter()
            .try_for_each(|(name, limit)| limit.check(name))
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

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "1111111111111111111111111111111111111111111111111111111111111111";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/xorlay/test.toml"))
    }

    #[test]
    fn full_example_parses() {
        let text = format!(
            r#"
key_file = "node.key"
[underlay]
listen = "0.0.0.0:4799"
interfaces = ["eth0", "eth1"]
xdp_mode = "auto"
[dataplane]
workers = 2
app = "127.0.0.1:9000"
worker_nice = -5
[control]
seeds = ["198.18.0.1:4799"]
k = 8
difficulty = 4
peers_file = "peers"
[admin]
socket = "/tmp/x.sock"
[[neighbor]]
id = "{ID}"
address = "198.18.0.2:4799"
"#
        );
        let config = parse(&text).expect("valid");
        assert_eq!(config.key_file, PathBuf::from("/etc/xorlay/node.key"));
        assert_eq!(config.listen, "0.0.0.0:4799".parse().expect("literal"));
        assert_eq!(config.interfaces, vec!["eth0", "eth1"]);
        assert_eq!(config.xdp_mode, XdpAttachMode::Auto);
        assert_eq!(config.dataplane.worker_nice, -5);
        assert_eq!(config.worker_count(), 2);
        assert_eq!(config.neighbors.len(), 1);
        assert_eq!(config.neighbors[0].id.to_string(), ID);
        assert_eq!(
            config.control.seeds,
            vec![Endpoint::Addr("198.18.0.1:4799".parse().expect("literal"))]
        );
        assert_eq!(config.control.k, 8);
        assert_eq!(config.control.difficulty, 4);
        assert_eq!(
            config.control.peers_file,
            Some(PathBuf::from("/etc/xorlay/peers"))
        );
    }

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../../deploy/xorlay.example.toml");
        parse(text).expect("deploy/xorlay.example.toml is valid");
    }

    #[test]
    fn xdp_pinning_keys_parse_and_are_checked() {
        let config = parse("key_file = \"/k\"").expect("minimal");
        assert_eq!(config.xdp.pin_dir, None, "no pinning by default");
        assert_eq!(config.xdp.warm_start_ms, 5000);
        assert!(config.xdp.shed, "load shedding on by default");
        let off = parse("key_file = \"/k\"\n[xdp]\nshed = false\n").expect("shed off");
        assert!(!off.xdp.shed);
        let config = parse(
            "key_file = \"/k\"\n[xdp]\npin_dir = \"/sys/fs/bpf/xorlay/a\"\nwarm_start_ms = 100\n",
        )
        .expect("pinning");
        assert_eq!(
            config.xdp.pin_dir.as_deref(),
            Some(Path::new("/sys/fs/bpf/xorlay/a"))
        );
        assert_eq!(config.xdp.warm_start_ms, 100);
        for (text, key) in [
            ("key_file = \"/k\"\n[xdp]\npin_dir = \"rel\"", "xdp.pin_dir"),
            ("key_file = \"/k\"\n[xdp]\npin_dir = \"/\"", "xdp.pin_dir"),
            (
                "key_file = \"/k\"\n[xdp]\nwarm_start_ms = 600001",
                "xdp.warm_start_ms",
            ),
        ] {
            let message = parse(text).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(message.contains(key), "{text}: {message}");
        }
    }

    #[test]
    fn xdp_settings_parse_partially_and_are_checked() {
        let config = parse(
            "key_file = \"/k\"\n[xdp]\nroute_idle_timeout_ms = 5000\n[xdp.limits]\nhandshake_per_source = { pps = 2, burst = 4 }\n",
        )
        .expect("valid");
        assert_eq!(config.xdp.route_idle_timeout_ms, 5000);
        assert!(config.xdp.route_cache);
        assert_eq!(config.xdp.limits.handshake_per_source.pps, 2);
        assert_eq!(
            config.xdp.limits.neighbor_data,
            RateLimits::default().neighbor_data
        );
        for (text, needle) in [
            (
                "key_file = \"/k\"\n[xdp]\nroute_idle_timeout_ms = 0",
                "route_idle_timeout_ms",
            ),
            (
                "key_file = \"/k\"\n[xdp.limits]\nneighbor_data = { pps = 5, burst = 0 }",
                "xdp.limits",
            ),
            (
                "key_file = \"/k\"\n[xdp.limits]\nbogus = { pps = 5, burst = 1 }",
                "bogus",
            ),
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(needle), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn seeds_and_neighbors_take_host_names_and_say_what_is_wrong() {
        let config = parse(&format!(
            "key_file = \"/k\"\n[control]\nseeds = [\"seed.example.net:4799\", \"[fd00::1]:4799\"]\n\
             [[neighbor]]\nid = \"{ID}\"\naddress = \"peer-1.example.net:4800\"\n"
        ))
        .expect("host names");
        assert_eq!(
            config.control.seeds[0],
            Endpoint::Host {
                host: "seed.example.net".into(),
                port: 4799
            }
        );
        assert_eq!(
            config.neighbors[0].address.to_string(),
            "peer-1.example.net:4800"
        );
        for (seed, needle) in [
            ("1.2.3.4", "missing port; write 1.2.3.4:PORT"),
            ("fd00::1", "missing port; write [fd00::1]:PORT"),
            ("[fd00::1]", "missing port; write [fd00::1]:PORT"),
            (
                "seed.example.net",
                "missing port; write seed.example.net:PORT",
            ),
            ("seed.example.net:http", "not a port number"),
            ("seed.example.net:0", "not a port number"),
            ("bad_host!:4799", "neither an IP address nor a host name"),
            ("fd00::1:4799:x", "IPv6 address goes in brackets"),
        ] {
            let err = parse(&format!(
                "key_file = \"/k\"\n[control]\nseeds = [\"{seed}\"]\n"
            ))
            .expect_err(seed)
            .to_string();
            assert!(err.contains(needle), "{seed}: {err}");
            assert!(!err.contains("invalid socket address syntax"), "{err}");
        }
        let err = parse(&format!(
            "key_file = \"/k\"\n[[neighbor]]\nid = \"{ID}\"\naddress = \"198.18.0.2\"\n"
        ))
        .expect_err("no port")
        .to_string();
        assert!(
            err.contains("neighbor address") && err.contains("missing port; write 198.18.0.2:PORT"),
            "{err}"
        );
    }

    #[test]
    fn host_names_are_bounded_with_a_clear_error() {
        let seeds = |n: usize| {
            let list: Vec<String> = (0..n)
                .map(|i| format!("\"seed-{i}.example.net:4799\""))
                .collect();
            format!(
                "key_file = \"/k\"\n[control]\nseeds = [{}]\n",
                list.join(", ")
            )
        };
        parse(&seeds(NAMED_PEERS_MAX)).expect("at the limit");
        let err = parse(&seeds(NAMED_PEERS_MAX + 1))
            .expect_err("over the limit")
            .to_string();
        assert!(
            err.contains(&format!(
                "{} seeds and neighbors are given by host name",
                NAMED_PEERS_MAX + 1
            )) && err.contains("write IP addresses"),
            "{err}"
        );
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse("key_file = \"/k\"").expect("valid");
        assert_eq!(config.listen.port(), DEFAULT_PORT);
        assert_eq!(config.dataplane, Dataplane::default());
        assert_eq!(config.xdp_mode, XdpAttachMode::Native);
        assert!(config.worker_count() >= 1);
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let cases: &[(&str, &str)] = &[
            ("", "key_file"),
            ("key_file = \"/k\"\nbogus = 1", "bogus"),
            (
                "key_file = \"/k\"\n[underlay]\nlisten = \"0.0.0.0:0\"",
                "fixed UDP port",
            ),
            (
                "key_file = \"/k\"\n[underlay]\nlisten = \"nonsense\"",
                "listen",
            ),
            (
                "key_file = \"/k\"\n[underlay]\ninterfaces = [\"a/b\"]",
                "interface name",
            ),
            (
                "key_file = \"/k\"\n[underlay]\ninterfaces = [\"a\", \"a\"]",
                "twice",
            ),
            (
                "key_file = \"/k\"\n[underlay]\nxdp_mode = \"fast\"",
                "xdp_mode",
            ),
            (
                "key_file = \"/k\"\n[dataplane]\nbuffer_count = 1000",
                "power of two",
            ),
            (
                "key_file = \"/k\"\n[dataplane]\nbuffer_size = 10",
                "buffer_size",
            ),
            ("key_file = \"/k\"\n[dataplane]\nworkers = 1000", "workers"),
            (
                "key_file = \"/k\"\n[dataplane]\nworker_nice = 20",
                "dataplane.worker_nice = 20 must be from -20",
            ),
            ("key_file = \"/k\"\n[control]\nk = 0", "control.k"),
            (
                "key_file = \"/k\"\n[control]\ndifficulty = 99",
                "difficulty",
            ),
            (
                "key_file = \"/k\"\n[control]\nbeacon_level = 17",
                "control.beacon_level = 17 is over 16",
            ),
            (
                "key_file = \"/k\"\n[control]\ndead_after_ms = 100",
                "dead_after_ms",
            ),
            (
                "key_file = \"/k\"\n[control]\nseeds = [\"0.0.0.0:4799\"]",
                "control.seeds",
            ),
            (
                "key_file = \"/k\"\n[[neighbor]]\nid = \"zz\"\naddress = \"198.18.0.1:1\"",
                "64 hexadecimal digits",
            ),
        ];
        for (text, needle) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(
                err.contains(needle),
                "{text:?} gave {err:?}, expected mention of {needle:?}"
            );
        }
        let v6_neighbor = format!(
            "key_file = \"/k\"\n[underlay]\nlisten = \"0.0.0.0:4799\"\n[[neighbor]]\nid = \"{ID}\"\naddress = \"[fd00::1]:4799\""
        );
        assert!(
            parse(&v6_neighbor)
                .expect_err("family")
                .to_string()
                .contains("IPv4")
        );
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
}
