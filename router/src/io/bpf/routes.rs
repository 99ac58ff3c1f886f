//! The fast path's forwarding state: the route cache and the runtime
//! configuration ([`RouteCache`], maps `xorlay_routes` and `xorlay_config`)
//! and the egress device map (`xorlay_tx_ports`).

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use aya::Ebpf;
use aya::maps::{Array, DevMapHash, HashMap, MapData};

use super::abi::{self, NeighborKey};
use super::clock::{clock_step_ns, monotonic_ns};
use super::error::{BpfError, chain, chain_errno};
use super::neighbors::neighbor_key;
use super::pins::open_pinned_map;
use super::{CONFIG_MAP_NAME, ROUTES_MAP_NAME, ROUTES_MAX, TX_PORTS_MAP_NAME, TX_PORTS_MAX};
use crate::config::RateLimits;
use crate::core::NodeId;
use crate::wire::consts;

/// The route cache's key for `dst`.
fn route_key(dst: &NodeId) -> abi::RouteKey {
    abi::RouteKey {
        id: *dst.as_bytes(),
    }
}

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
    /// The via this route was found by, when the destination has no route
    /// of its own here (compact routing: toward the destination's beacon,
    /// which the packet names). `Some`: the entry keeps the via's first
    /// [`VIA_TAG_LEN`] bytes and the program uses it only for packets with
    /// a via that starts with them; any other packet for the destination
    /// goes to the workers. `None`: the destination's own route, for every
    /// packet to it, with a via or not.
    pub via: Option<NodeId>,
}

/// The bytes of a via that a route cache entry keeps ([`RouteEntry::via`]).
pub const VIA_TAG_LEN: usize = consts::ROUTE_VIA_TAG_LEN;

/// What a route cache entry made by `via` keeps of it: its first
/// [`VIA_TAG_LEN`] bytes, compared by the program with a packet's via.
pub fn via_tag(via: &NodeId) -> [u8; VIA_TAG_LEN] {
    let mut tag = [0u8; VIA_TAG_LEN];
    tag.copy_from_slice(&via.as_bytes()[..VIA_TAG_LEN]);
    tag
}

/// A route cache entry as read back from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedRoute {
    /// Where it sends; `None` for a negative entry (no route: dropped). Its
    /// [`RouteEntry::via`] is always `None`: the entry keeps only the via's
    /// tag, in [`CachedRoute::via_tag`].
    pub route: Option<RouteEntry>,
    /// For an entry made by a via: the via's first bytes ([`via_tag`]),
    /// the packets it applies to. `None`: it applies to every packet.
    pub via_tag: Option<[u8; VIA_TAG_LEN]>,
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
    routes: HashMap<MapData, abi::RouteKey, abi::Route>,
    config: Array<MapData, abi::Config>,
    current: abi::Config,
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
/// [`load`](super::load) or [`load_with`](super::load_with); fails if they were taken before.
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
    let config: Array<MapData, abi::Config> =
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

impl RouteCache {
    /// A second handle on the route cache pinned in `pin_dir` (by a router
    /// started with [`XdpRouter::attach_pinned`]), reading the configuration
    /// as it is now. For inspection and tests: the configuration has one
    /// writer, the router's own handle; installs and removals through this
    /// one are safe.
    ///
    /// [`XdpRouter::attach_pinned`]: super::XdpRouter::attach_pinned
    pub fn open_pinned(pin_dir: &Path) -> Result<RouteCache, BpfError> {
        let open_error = |map: &'static str| {
            move |detail: String| BpfError::RouteCache {
                action: "open",
                map,
                detail: format!("{detail} (pinned in {})", pin_dir.display()),
            }
        };
        let config: Array<MapData, abi::Config> =
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
        (self.current.flags & consts::CONFIG_F_LOCAL_ID != 0)
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
    /// in the current generation (replacing any entry for `dst`); with
    /// `route.via`, only those that carry that via. Fails before touching
    /// the map if the two addresses are of different families,
    /// unspecified, or have port 0.
    pub fn install(&mut self, dst: &NodeId, route: &RouteEntry) -> Result<(), BpfError> {
        let value = encode(route, self.current.generation, monotonic_ns())?;
        self.insert(dst, value)
    }

    /// Marks `dst` unroutable in the current generation: the program drops
    /// data packets for it (`drop_no_route`) instead of passing them to the
    /// workers, so a flood to an unroutable ID stays in the kernel.
    pub fn install_no_route(&mut self, dst: &NodeId) -> Result<(), BpfError> {
        let now = monotonic_ns();
        self.insert(
            dst,
            abi::Route {
                flags: consts::ROUTE_F_NEGATIVE,
                generation: self.current.generation,
                installed_ns: now,
                last_used_ns: now,
                ..abi::Route::default()
            },
        )
    }

    fn insert(&mut self, dst: &NodeId, value: abi::Route) -> Result<(), BpfError> {
        self.routes
            .insert(route_key(dst), value, 0)
            .map_err(|e| BpfError::RouteCache {
                action: "update",
                map: ROUTES_MAP_NAME,
                detail: chain(&e),
            })
    }

    /// Deletes the entry for `dst`; `false` if there was none.
    pub fn remove(&mut self, dst: &NodeId) -> Result<bool, BpfError> {
        match self.routes.remove(&route_key(dst)) {
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
        let value = match self.routes.get(&route_key(dst), 0) {
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
        Ok(Some(decode(&value)))
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
        next.flags |= consts::CONFIG_F_LOCAL_ID;
        self.write(next)
    }

    /// Sets the rate limits of the filter step. A limit with a rate and no
    /// burst fails before anything changes. Buckets keep their state: a
    /// lower rate applies from the next packet on. A burst below one step
    /// of the program's clock is raised to it ([`RateLimit::for_clock_step`],
    /// logged).
    ///
    /// [`RateLimit::for_clock_step`]: super::RateLimit::for_clock_step
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

    fn write(&mut self, next: abi::Config) -> Result<(), BpfError> {
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

/// The map value for `route`, installed in `generation` at `now_ns`; fails
/// if the two addresses are of different families, unspecified, or have
/// port 0. The L2 cache fields stay zero, so the program resolves the next
/// hop afresh.
fn encode(route: &RouteEntry, generation: u64, now_ns: u64) -> Result<abi::Route, BpfError> {
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
    if next_hop.socket_addr().ip().is_unspecified() || source.socket_addr().ip().is_unspecified() {
        return Err(invalid("an address is unspecified (0.0.0.0 or ::)"));
    }
    if route.next_hop.port() == 0 || route.source.port() == 0 {
        return Err(invalid("a UDP port is 0"));
    }
    let (flags, via_tag) = match &route.via {
        Some(via) => (consts::ROUTE_F_VIA, self::via_tag(via)),
        None => (0, [0; VIA_TAG_LEN]),
    };
    Ok(abi::Route {
        next_hop_addr: next_hop.addr,
        source_addr: source.addr,
        next_hop_port: route.next_hop.port().to_be(),
        source_port: route.source.port().to_be(),
        flags,
        generation,
        installed_ns: now_ns,
        last_used_ns: now_ns,
        via_tag,
        ..abi::Route::default()
    })
}

/// A map value as a [`CachedRoute`].
fn decode(value: &abi::Route) -> CachedRoute {
    let negative = value.flags & consts::ROUTE_F_NEGATIVE != 0;
    let addr = |addr: [u8; 16], port: u16| NeighborKey { addr, port, pad: 0 }.socket_addr();
    CachedRoute {
        route: (!negative).then(|| RouteEntry {
            next_hop: addr(value.next_hop_addr, value.next_hop_port),
            source: addr(value.source_addr, value.source_port),
            via: None,
        }),
        via_tag: (value.flags & consts::ROUTE_F_VIA != 0).then_some(value.via_tag),
        generation: value.generation,
        installed_ns: value.installed_ns,
        last_used_ns: value.last_used_ns,
    }
}

// The route cache moves to the control thread.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<RouteCache>();
};

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
pub(super) fn prune_tx_ports(ebpf: &mut Ebpf, keep: &[u32]) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn random_id() -> NodeId {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).expect("getrandom");
        NodeId::from_bytes(bytes)
    }

    fn entry(via: Option<NodeId>) -> RouteEntry {
        RouteEntry {
            next_hop: "198.18.3.2:4799".parse().expect("literal"),
            source: "198.18.3.1:4800".parse().expect("literal"),
            via,
        }
    }

    #[test]
    fn an_entry_without_a_via_applies_to_every_packet() {
        let value = encode(&entry(None), 7, 1234).expect("valid route");
        assert_eq!(value.flags, 0, "neither negative nor by a via");
        assert_eq!(value.via_tag, [0; VIA_TAG_LEN]);
        assert_eq!(value.next_hop_addr[10..], [0xff, 0xff, 198, 18, 3, 2]);
        assert_eq!(value.source_addr[10..], [0xff, 0xff, 198, 18, 3, 1]);
        assert_eq!(value.next_hop_port, 4799u16.to_be());
        assert_eq!(value.source_port, 4800u16.to_be());
        assert_eq!(
            (value.generation, value.installed_ns, value.last_used_ns),
            (7, 1234, 1234)
        );
        assert_eq!(value.l2_checked_ns, 0, "the program resolves afresh");
        let cached = decode(&value);
        assert_eq!(cached.route, Some(entry(None)));
        assert_eq!(cached.via_tag, None);
    }

    #[test]
    fn an_entry_by_a_via_keeps_its_first_bytes() {
        let via = random_id();
        let value = encode(&entry(Some(via)), 7, 1234).expect("valid route");
        assert_eq!(value.flags, consts::ROUTE_F_VIA);
        assert_eq!(value.via_tag[..], via.as_bytes()[..VIA_TAG_LEN]);
        assert_eq!(via_tag(&via), value.via_tag);
        // Everything else as without a via.
        let plain = encode(&entry(None), 7, 1234).expect("valid route");
        assert_eq!(
            abi::Route {
                flags: 0,
                via_tag: [0; VIA_TAG_LEN],
                ..value
            },
            plain
        );
        let cached = decode(&value);
        assert_eq!(
            cached.route,
            Some(entry(None)),
            "the via itself is not kept"
        );
        assert_eq!(cached.via_tag, Some(via_tag(&via)));
    }

    #[test]
    fn a_negative_entry_reads_back_as_no_route() {
        let value = abi::Route {
            flags: consts::ROUTE_F_NEGATIVE,
            generation: 3,
            ..abi::Route::default()
        };
        let cached = decode(&value);
        assert_eq!((cached.route, cached.via_tag), (None, None));
        assert_eq!(cached.generation, 3);
    }

    #[test]
    fn invalid_routes_are_refused_with_or_without_a_via() {
        for via in [None, Some(random_id())] {
            let route = RouteEntry {
                source: "[fd00:3::1]:4799".parse().expect("literal"),
                ..entry(via)
            };
            assert!(matches!(
                encode(&route, 1, 1),
                Err(BpfError::InvalidRoute { .. })
            ));
        }
    }
}
