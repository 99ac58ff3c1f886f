//! The `#[repr(C)]` structs shared with the C program (`ebpf/maps.h`),
//! their layouts asserted at compile time against the `XORLAY_*` constants
//! of `ebpf/consts.h`, and their conversions from the Rust settings.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use super::clock::clock_step_ns;
use crate::config::{RateLimit, RateLimits};
use crate::wire::consts;

/// A key of the neighbor allowlist: `struct xorlay_neighbor_key` of
/// `ebpf/maps.h`, whose layout the asserts below pin to the
/// `XORLAY_NEIGHBOR_KEY_*` constants. IPv4 sources are stored as v4-mapped
/// IPv6 addresses (`::ffff:a.b.c.d`), so one key form serves both families;
/// make keys with [`neighbor_key`]. Neighbors are admitted by IP address:
/// the port is 0 in every key, since a neighbor's fast path forwards from
/// flow ports (`Packet::flow_port`), not from its overlay port.
///
/// [`neighbor_key`]: super::neighbor_key
#[repr(C, align(4))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NeighborKey {
    /// IPv6 address, or the v4-mapped form of an IPv4 address.
    pub(super) addr: [u8; 16],
    /// Always 0 (kept for the layout the kernel program shares).
    pub(super) port: [u8; 2],
    /// Always 0: the kernel hashes every key byte.
    pub(super) pad: u16,
}

const _: () = assert!(size_of::<NeighborKey>() == consts::NEIGHBOR_KEY_LEN);
// Like the C struct (`__attribute__((aligned(4)))`; its size is what the
// kernel checks, this keeps the two identical).
const _: () = assert!(align_of::<NeighborKey>() == 4);
const _: () = assert!(std::mem::offset_of!(NeighborKey, addr) == consts::NEIGHBOR_KEY_OFF_ADDR);
const _: () = assert!(std::mem::offset_of!(NeighborKey, port) == consts::NEIGHBOR_KEY_OFF_PORT);
const _: () = assert!(std::mem::offset_of!(NeighborKey, pad) == consts::NEIGHBOR_KEY_OFF_PAD);

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

/// `struct xorlay_shed` of `ebpf/maps.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct ShedValue {
    pub(super) pps: u32,
    pub(super) burst: u32,
}

// SAFETY: two u32, no padding: every bit pattern is valid.
unsafe impl aya::Pod for ShedValue {}

/// The value of `xorlay_config`: `struct xorlay_config` of `ebpf/maps.h`,
/// pinned to the `XORLAY_CONFIG_*` constants below.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ConfigValue {
    pub(super) local_id: [u8; 32],
    pub(super) generation: u64,
    pub(super) idle_timeout_ns: u64,
    pub(super) handshake_source_pps: u32,
    pub(super) handshake_source_burst: u32,
    pub(super) handshake_global_pps: u32,
    pub(super) handshake_global_burst: u32,
    pub(super) neighbor_pps: u32,
    pub(super) neighbor_burst: u32,
    pub(super) flags: u32,
    pub(super) pad: u32,
}

const _: () = assert!(size_of::<ConfigValue>() == consts::CONFIG_LEN);
const _: () = assert!(std::mem::offset_of!(ConfigValue, local_id) == consts::CONFIG_OFF_LOCAL_ID);
const _: () =
    assert!(std::mem::offset_of!(ConfigValue, generation) == consts::CONFIG_OFF_GENERATION);
const _: () = assert!(
    std::mem::offset_of!(ConfigValue, idle_timeout_ns) == consts::CONFIG_OFF_IDLE_TIMEOUT_NS
);
const _: () = assert!(
    std::mem::offset_of!(ConfigValue, handshake_source_pps)
        == consts::CONFIG_OFF_HANDSHAKE_SOURCE_PPS
);
const _: () = assert!(
    std::mem::offset_of!(ConfigValue, handshake_source_burst)
        == consts::CONFIG_OFF_HANDSHAKE_SOURCE_BURST
);
const _: () = assert!(
    std::mem::offset_of!(ConfigValue, handshake_global_pps)
        == consts::CONFIG_OFF_HANDSHAKE_GLOBAL_PPS
);
const _: () = assert!(
    std::mem::offset_of!(ConfigValue, handshake_global_burst)
        == consts::CONFIG_OFF_HANDSHAKE_GLOBAL_BURST
);
const _: () =
    assert!(std::mem::offset_of!(ConfigValue, neighbor_pps) == consts::CONFIG_OFF_NEIGHBOR_PPS);
const _: () =
    assert!(std::mem::offset_of!(ConfigValue, neighbor_burst) == consts::CONFIG_OFF_NEIGHBOR_BURST);
const _: () = assert!(std::mem::offset_of!(ConfigValue, flags) == consts::CONFIG_OFF_FLAGS);

// SAFETY: `#[repr(C)]`, integers and an integer array, no implicit padding
// (the asserts above: 32 + 2 * 8 + 8 * 4 = 80 bytes, a multiple of 8), so
// every bit pattern is a valid value.
unsafe impl aya::Pod for ConfigValue {}

impl ConfigValue {
    pub(super) fn new(limits: &RateLimits, idle_timeout: Duration) -> ConfigValue {
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
    pub(super) fn set_limits(&mut self, limits: &RateLimits) {
        let limits = limits.for_clock_step(clock_step_ns());
        self.handshake_source_pps = limits.handshake_per_source.pps;
        self.handshake_source_burst = limits.handshake_per_source.burst;
        self.handshake_global_pps = limits.handshake_global.pps;
        self.handshake_global_burst = limits.handshake_global.burst;
        self.neighbor_pps = limits.neighbor_data.pps;
        self.neighbor_burst = limits.neighbor_data.burst;
    }

    pub(super) fn limits(&self) -> RateLimits {
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

    pub(super) fn set_idle_timeout(&mut self, timeout: Duration) {
        self.idle_timeout_ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    }
}

/// The value of `xorlay_routes`: `struct xorlay_route` of `ebpf/maps.h`,
/// pinned to the `XORLAY_ROUTE_*` constants below.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RouteValue {
    pub(super) next_hop_addr: [u8; 16],
    pub(super) source_addr: [u8; 16],
    pub(super) next_hop_port: [u8; 2],
    pub(super) source_port: [u8; 2],
    pub(super) flags: u32,
    pub(super) generation: u64,
    pub(super) installed_ns: u64,
    pub(super) last_used_ns: u64,
    /// The program's L2 cache of the next hop (`resolve_l2`); written as
    /// zeros, so an install always resolves afresh.
    pub(super) l2: RouteL2,
}

/// `l2_*` of `struct xorlay_route`: the program's, zero from userspace.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct RouteL2 {
    checked_ns: u64,
    ifindex: u32,
    max_len: u16,
    dmac: [u8; 6],
    smac: [u8; 6],
    pad: [u8; 6],
}

const _: () = assert!(size_of::<RouteValue>() == consts::ROUTE_LEN);
const _: () =
    assert!(std::mem::offset_of!(RouteValue, next_hop_addr) == consts::ROUTE_OFF_NEXT_HOP_ADDR);
const _: () =
    assert!(std::mem::offset_of!(RouteValue, source_addr) == consts::ROUTE_OFF_SOURCE_ADDR);
const _: () =
    assert!(std::mem::offset_of!(RouteValue, next_hop_port) == consts::ROUTE_OFF_NEXT_HOP_PORT);
const _: () =
    assert!(std::mem::offset_of!(RouteValue, source_port) == consts::ROUTE_OFF_SOURCE_PORT);
const _: () = assert!(std::mem::offset_of!(RouteValue, flags) == consts::ROUTE_OFF_FLAGS);
const _: () = assert!(std::mem::offset_of!(RouteValue, generation) == consts::ROUTE_OFF_GENERATION);
const _: () =
    assert!(std::mem::offset_of!(RouteValue, installed_ns) == consts::ROUTE_OFF_INSTALLED_NS);
const _: () =
    assert!(std::mem::offset_of!(RouteValue, last_used_ns) == consts::ROUTE_OFF_LAST_USED_NS);
const _: () = assert!(std::mem::offset_of!(RouteValue, l2) == consts::ROUTE_OFF_L2_CHECKED_NS);
const _: () = assert!(size_of::<RouteL2>() == 32);
const _: () = assert!(consts::NODE_ID_LEN == 32);

// SAFETY: `#[repr(C)]`, integers and integer arrays, no implicit padding (the
// asserts above: 16 + 16 + 2 + 2 + 4 + 3 * 8 + 32 = 96 bytes; RouteL2 is
// 8 + 4 + 2 + 3 * 6 = 32), so every bit
// pattern is a valid value.
unsafe impl aya::Pod for RouteValue {}

/// The owner record (`struct xorlay_owner` of `ebpf/maps.h`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OwnerValue {
    pub(super) pid: u32,
    pub(super) pad: u32,
    /// Start time of `pid`, clock ticks after boot: tells a live owner from
    /// another process that got its PID.
    pub(super) start_time: u64,
}

const _: () = assert!(size_of::<OwnerValue>() == 16);

// SAFETY: `#[repr(C)]`, integers, no implicit padding (4 + 4 + 8 = 16
// bytes), so every bit pattern is a valid value.
unsafe impl aya::Pod for OwnerValue {}

#[cfg(test)]
mod tests {
    use super::*;

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
}
