//! A limit on log lines that the network can cause (an attacker can make a
//! router drop packets or fail dials at will): at most `burst` lines per
//! window; the lines held back are counted and the count is told with the
//! next line let through.

use std::time::{Duration, Instant};

/// At most `burst` lines per `window`.
#[derive(Debug, Clone)]
pub struct LogLimit {
    window: Duration,
    burst: u32,
    window_start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LogLimit {
    /// A limit of `burst` lines per `window`.
    pub const fn new(window: Duration, burst: u32) -> LogLimit {
        LogLimit {
            window,
            burst,
            window_start: None,
            used: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged at `now`: `Some(n)` with the number of
    /// lines held back since the last one let through, else `None` (and
    /// this one is counted as held back).
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        let expired = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.window);
        if expired {
            self.window_start = Some(now);
            self.used = 0;
        }
        if self.used >= self.burst {
            self.suppressed += 1;
            return None;
        }
        self.used += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// " (N similar line(s) held back)" for a count from [`LogLimit::admit`],
/// or nothing for 0.
pub fn held_back(count: u64) -> String {
    if count == 0 {
        String::new()
    } else {
        format!(" ({count} similar line(s) held back by the log rate limit)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_holds_back_and_tells_the_count() {
        let start = Instant::now();
        let mut limit = LogLimit::new(Duration::from_secs(10), 2);
        assert_eq!(limit.admit(start), Some(0));
        assert_eq!(limit.admit(start), Some(0));
        assert_eq!(limit.admit(start), None);
        assert_eq!(limit.admit(start + Duration::from_secs(9)), None);
        assert_eq!(limit.admit(start + Duration::from_secs(10)), Some(2));
        assert_eq!(
            held_back(2),
            " (2 similar line(s) held back by the log rate limit)"
        );
        assert_eq!(held_back(0), "");
    }
}
