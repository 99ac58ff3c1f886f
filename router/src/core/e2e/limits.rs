//! Handshake rate limits: token buckets in total and per source node ID,
//! and the responder's rotating cookie secret.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::id::NodeId;

/// Micro-tokens per token.
const SCALE: u64 = 1_000_000;

/// A token bucket refilled at `rate` tokens a second up to `burst`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bucket {
    micro_tokens: u64,
    last: Option<Instant>,
}

impl Bucket {
    /// A full bucket.
    pub(super) fn full(burst: u32) -> Bucket {
        Bucket {
            micro_tokens: u64::from(burst) * SCALE,
            last: None,
        }
    }

    fn refill(&mut self, now: Instant, rate: u32, burst: u32) {
        let cap = u64::from(burst) * SCALE;
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last);
            // Saturates after about 584,000 years at a million per second.
            let add = u64::try_from(elapsed.as_micros().saturating_mul(u128::from(rate)))
                .unwrap_or(u64::MAX);
            self.micro_tokens = self.micro_tokens.saturating_add(add).min(cap);
        }
        self.last = Some(self.last.map_or(now, |last| last.max(now)));
    }

    /// Tokens left at `now` (whole and fractional, in micro-tokens).
    pub(super) fn level(&mut self, now: Instant, rate: u32, burst: u32) -> u64 {
        self.refill(now, rate, burst);
        self.micro_tokens
    }

    /// Takes one token if there is one.
    pub(super) fn take(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        self.refill(now, rate, burst);
        if self.micro_tokens >= SCALE {
            self.micro_tokens -= SCALE;
            true
        } else {
            false
        }
    }

    /// Whether fewer than half of `burst` tokens are left.
    pub(super) fn below_half(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        self.level(now, rate, burst) < u64::from(burst) * SCALE / 2
    }
}

/// Per-source buckets, at most `max` sources at once.
#[derive(Debug)]
pub(super) struct SourceLimiter {
    buckets: BTreeMap<NodeId, Bucket>,
    /// No purge of full buckets before this (a purge that freed nothing
    /// is not repeated at once).
    purge_not_before: Option<Instant>,
}

impl SourceLimiter {
    pub(super) fn new() -> SourceLimiter {
        SourceLimiter {
            buckets: BTreeMap::new(),
            purge_not_before: None,
        }
    }

    /// Takes a token from `source`'s bucket. A new source when the table
    /// is full is refused (fails closed) unless a purge of the sources
    /// whose buckets are full again (the same as absent) makes room.
    pub(super) fn take(
        &mut self,
        now: Instant,
        source: &NodeId,
        rate: u32,
        burst: u32,
        max: usize,
    ) -> bool {
        if !self.buckets.contains_key(source) && self.buckets.len() >= max {
            if self.purge_not_before.is_some_and(|t| now < t) {
                return false;
            }
            let cap = u64::from(burst) * SCALE;
            self.buckets
                .retain(|_, bucket| bucket.level(now, rate, burst) < cap);
            if self.buckets.len() >= max {
                self.purge_not_before = Some(now + Duration::from_secs(1));
                return false;
            }
        }
        self.buckets
            .entry(*source)
            .or_insert_with(|| Bucket::full(burst))
            .take(now, rate, burst)
    }

    /// Sources tracked.
    pub(super) fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// How long a cookie secret is current; cookies of the previous one are
/// accepted for as long again.
pub(super) const COOKIE_SECRET_LIFETIME: Duration = Duration::from_secs(120);

/// The responder's cookie secrets, rotated lazily on use.
pub(super) struct CookieSecrets {
    pub(super) current: [u8; 32],
    pub(super) previous: Option<[u8; 32]>,
    pub(super) rotated_at: Option<Instant>,
}

impl CookieSecrets {
    /// Rotates if due at `now`, drawing a new secret from `draw`.
    pub(super) fn rotate(&mut self, now: Instant, draw: impl FnOnce() -> [u8; 32]) {
        let Some(at) = self.rotated_at else {
            self.rotated_at = Some(now);
            return;
        };
        let age = now.saturating_duration_since(at);
        if age < COOKIE_SECRET_LIFETIME {
            return;
        }
        self.previous = (age < 2 * COOKIE_SECRET_LIFETIME).then_some(self.current);
        self.current = draw();
        self.rotated_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_rate_up_to_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::full(3);
        assert!(b.take(t0, 10, 3));
        assert!(b.take(t0, 10, 3));
        assert!(b.take(t0, 10, 3));
        assert!(!b.take(t0, 10, 3));
        assert!(!b.take(t0 + Duration::from_millis(99), 10, 3));
        assert!(b.take(t0 + Duration::from_millis(100), 10, 3));
        assert_eq!(b.level(t0 + Duration::from_secs(100), 10, 3), 3 * SCALE);
        assert!(!b.below_half(t0 + Duration::from_secs(100), 10, 3));
    }

    #[test]
    fn sources_are_bounded_and_fail_closed() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::new();
        let id = |i: u8| NodeId::from_bytes([i; 32]);
        assert!(l.take(t0, &id(1), 1, 1, 2));
        assert!(l.take(t0, &id(2), 1, 1, 2));
        assert!(!l.take(t0, &id(1), 1, 1, 2), "empty bucket");
        assert!(!l.take(t0, &id(3), 1, 1, 2), "table full, nothing to purge");
        assert_eq!(l.len(), 2);
        // A second later both buckets are full again: purged.
        let t1 = t0 + Duration::from_secs(2);
        assert!(l.take(t1, &id(3), 1, 1, 2));
        assert!(l.len() <= 2);
    }
}
