//! The neighbor allowlist (`xorlay_neighbors`): [`NeighborMap`], kept equal
//! to the set of neighbors with an authenticated session by
//! [`NeighborMap::sync`], and its keys ([`neighbor_key`]).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use aya::Ebpf;
use aya::maps::{MapData, PerCpuHashMap, PerCpuValues};
use serde::Serialize;

use super::abi::NeighborKey;
use super::error::{BpfError, chain};
use super::pins::open_pinned_map;
use super::{NEIGHBORS_MAP_NAME, NEIGHBORS_MAX};

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
        port: 0,
        pad: 0,
    }
}

/// A neighbor's data bucket on every CPU, zeroed: full.
pub(super) fn full_bucket() -> Result<PerCpuValues<u64>, BpfError> {
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

/// Takes the neighbor allowlist out of a program from [`load`](super::load) or
/// [`load_with`](super::load_with); fails if it was taken before.
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
    /// started with [`XdpRouter::attach_pinned`](super::XdpRouter::attach_pinned)).
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv6Addr, SocketAddrV6};

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
        assert_eq!(key.port, 0, "admitted by IP: any source port");
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
}
