//! [`XdpCounters`]: the per-CPU stats array (`xorlay_stats`) summed over
//! the CPUs, one field per `XORLAY_XDP_*` counter of `ebpf/consts.h`.

use aya::Ebpf;
use aya::maps::{MapData, PerCpuArray};
use serde::Serialize;

use super::error::{BpfError, chain};
use super::{STAT_COUNT, STATS_MAP_NAME};
use crate::wire::consts::{self, XdpStat, XdpVerdict};

macro_rules! xdp_counters {
    ($( #[doc = $doc:literal] $variant:ident $field:ident $verdict:ident = $index:literal, )*) => {
        /// The XDP counters summed over all CPUs; one field per `XORLAY_XDP_*`
        /// counter of `ebpf/consts.h` ([`XdpStat`]), in index order (the
        /// order of `xorlay stats`), generated from that header.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
        pub struct XdpCounters {
            $( #[doc = $doc] pub $field: u64, )*
        }

        impl XdpCounters {
            /// The counters from an array indexed by `XORLAY_XDP_*`.
            pub const fn from_array(values: &[u64; STAT_COUNT]) -> XdpCounters {
                XdpCounters {
                    $( $field: values[$index], )*
                }
            }

            /// The counters as an array indexed by `XORLAY_XDP_*`.
            pub const fn to_array(&self) -> [u64; STAT_COUNT] {
                [$( self.$field, )*]
            }

            /// The counter `stat`.
            pub const fn stat(&self, stat: XdpStat) -> u64 {
                match stat {
                    $( XdpStat::$variant => self.$field, )*
                }
            }
        }
    };
}

consts::xdp_stat_list!(xdp_counters);

impl XdpCounters {
    /// The counter with index `stat_index` (an `XORLAY_XDP_*` constant, e.g.
    /// [`crate::wire::OverlayError::xdp_stat`]); 0 for an unknown index.
    pub fn get(&self, stat_index: u32) -> u64 {
        XdpStat::from_index(stat_index).map_or(0, |stat| self.stat(stat))
    }

    /// The sum of the counters of `verdict`.
    const fn sum(&self, verdict: XdpVerdict) -> u64 {
        let values = self.to_array();
        let mut sum = 0u64;
        let mut index = 0;
        while index < STAT_COUNT {
            // `XdpStat::ALL` is in index order.
            if XdpStat::ALL[index].verdict() as u8 == verdict as u8 {
                sum = sum.wrapping_add(values[index]);
            }
            index += 1;
        }
        sum
    }

    /// All drops, whatever the reason (every `drop_*` counter).
    pub const fn dropped(&self) -> u64 {
        self.sum(XdpVerdict::Drop)
    }

    /// Packets the fast path forwarded, `XDP_TX` and `XDP_REDIRECT` (every
    /// `fwd_*` counter).
    pub const fn forwarded(&self) -> u64 {
        self.sum(XdpVerdict::Forward)
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
