//! Which fast-path installs a worker asks for: at most one request per
//! destination and outcome per [`REPEAT_INTERVAL`] (a direct-mapped table of
//! recent requests), and at most `rate` requests per second overall (a
//! token bucket), so a flood of new destinations cannot become an upcall
//! storm. Fixed size, no allocation after construction, pure.

use std::time::{Duration, Instant};

use crate::id::NodeId;

/// Slots of the recent-request table (a power of two).
pub const RECENT_SLOTS: usize = 4096;
/// A request for the same destination and outcome is not repeated sooner.
pub const REPEAT_INTERVAL: Duration = Duration::from_secs(1);

/// A request: `Some(next hop)` to cache a route, `None` for no route.
type Outcome = Option<NodeId>;

/// Deduplicates and rate-limits install requests.
#[derive(Debug)]
pub struct InstallFilter {
    recent: Box<[Option<(NodeId, Outcome, Instant)>]>,
    rate_per_sec: u32,
    burst: u32,
    /// Tokens, in thousandths.
    tokens_milli: u64,
    refilled: Option<Instant>,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The same request went out less than [`REPEAT_INTERVAL`] ago.
    Repeat,
    /// The rate limit is exhausted.
    Limited,
}

impl InstallFilter {
    /// At most `rate_per_sec` requests per second, bursts of `burst`.
    pub fn new(rate_per_sec: u32, burst: u32) -> InstallFilter {
        InstallFilter {
            recent: vec![None; RECENT_SLOTS].into_boxed_slice(),
            rate_per_sec,
            burst: burst.max(1),
            tokens_milli: u64::from(burst.max(1)) * 1000,
            refilled: None,
        }
    }

    /// Whether to ask for `dst` -> `outcome` now; records it if so.
    pub fn admit(&mut self, now: Instant, dst: &NodeId, outcome: Outcome) -> Result<(), Refusal> {
        let slot = slot_of(dst);
        if let Some((seen, seen_outcome, at)) = &self.recent[slot]
            && seen == dst
            && *seen_outcome == outcome
            && now.saturating_duration_since(*at) < REPEAT_INTERVAL
        {
            return Err(Refusal::Repeat);
        }
        self.refill(now);
        if self.tokens_milli < 1000 {
            return Err(Refusal::Limited);
        }
        self.tokens_milli -= 1000;
        self.recent[slot] = Some((*dst, outcome, now));
        Ok(())
    }

    fn refill(&mut self, now: Instant) {
        let Some(last) = self.refilled.replace(now) else {
            return;
        };
        let elapsed_us = now
            .saturating_duration_since(last)
            .as_micros()
            .min(u128::from(u32::MAX)) as u64;
        // rate tokens per second = rate / 1000 milli-tokens per microsecond.
        let add = elapsed_us.saturating_mul(u64::from(self.rate_per_sec)) / 1000;
        self.tokens_milli = (self.tokens_milli + add).min(u64::from(self.burst) * 1000);
    }
}

/// Node IDs are hashes, so their first bytes index the table evenly; an
/// attacker choosing destinations to collide only evicts entries, and the
/// token bucket still bounds the requests.
fn slot_of(dst: &NodeId) -> usize {
    let b = dst.as_bytes();
    u16::from_be_bytes([b[0], b[1]]) as usize & (RECENT_SLOTS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u16) -> NodeId {
        let mut b = [0u8; 32];
        b[..2].copy_from_slice(&n.to_be_bytes());
        NodeId::from_bytes(b)
    }

    #[test]
    fn repeats_are_suppressed_until_the_interval_passes() {
        let t0 = Instant::now();
        let mut f = InstallFilter::new(1000, 100);
        let hop = Some(id(9));
        assert_eq!(f.admit(t0, &id(1), hop), Ok(()));
        assert_eq!(
            f.admit(t0 + Duration::from_millis(10), &id(1), hop),
            Err(Refusal::Repeat)
        );
        // A different outcome for the same destination is news.
        assert_eq!(
            f.admit(t0 + Duration::from_millis(20), &id(1), None),
            Ok(())
        );
        assert_eq!(
            f.admit(
                t0 + REPEAT_INTERVAL + Duration::from_millis(30),
                &id(1),
                None
            ),
            Ok(())
        );
    }

    #[test]
    fn the_rate_limit_bounds_floods_of_new_destinations() {
        let t0 = Instant::now();
        let mut f = InstallFilter::new(1000, 100);
        let admitted = (0..10_000u16)
            .filter(|n| f.admit(t0, &id(*n), None).is_ok())
            .count();
        assert_eq!(admitted, 100, "the burst");
        // 50 ms later: 50 more tokens.
        let later = t0 + Duration::from_millis(50);
        let admitted = (10_000..20_000u16)
            .filter(|n| f.admit(later, &id(*n), None).is_ok())
            .count();
        assert_eq!(admitted, 50);
        assert_eq!(f.admit(later, &id(20_001), None), Err(Refusal::Limited));
    }

    #[test]
    fn tokens_never_exceed_the_burst() {
        let t0 = Instant::now();
        let mut f = InstallFilter::new(1000, 10);
        assert!(f.admit(t0, &id(1), None).is_ok());
        let much_later = t0 + Duration::from_secs(3600);
        let admitted = (100..200u16)
            .filter(|n| f.admit(much_later, &id(*n), None).is_ok())
            .count();
        assert_eq!(admitted, 10);
    }
}
