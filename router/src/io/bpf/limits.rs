//! The token buckets of the filter step as the program enforces them: the
//! settings ([`RateLimit`], [`RateLimits`]) are `crate::config`'s; this
//! raises their bursts to what the program's clock can meter.

use crate::config::{RateLimit, RateLimits};

impl RateLimit {
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
}

impl RateLimits {
    /// Every limit as [`RateLimit::for_clock_step`] makes it.
    pub fn for_clock_step(&self, step_ns: u64) -> RateLimits {
        RateLimits {
            handshake_per_source: self.handshake_per_source.for_clock_step(step_ns),
            handshake_global: self.handshake_global.for_clock_step(step_ns),
            neighbor_data: self.neighbor_data.for_clock_step(step_ns),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::bpf::clock_step_ns;

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
