//! The token buckets of the filter step: [`RateLimit`] and [`RateLimits`].

use serde::{Deserialize, Serialize};

use super::error::BpfError;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::bpf::clock_step_ns;

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
}
