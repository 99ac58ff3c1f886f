//! [`XdpCounters`]: the per-CPU stats array (`xorlay_stats`) summed over
//! the CPUs, one field per `XORLAY_XDP_*` counter of `ebpf/consts.h`.

use aya::Ebpf;
use aya::maps::{MapData, PerCpuArray};
use serde::Serialize;

use super::error::{BpfError, chain};
use super::{STAT_COUNT, STATS_MAP_NAME};
use crate::wire::consts;

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
    /// Dropped: a data packet from a source IP address that is not in the
    /// neighbor allowlist.
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

/// Reads the stats map of a program from [`load`](super::load) and sums every counter
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
}
