//! Watches the transmit drops of the interfaces XDP is attached to, and
//! warns when they grow.
//!
//! The fast path's `fwd_tx` and `fwd_redirect` count XDP verdicts, not
//! frames a driver accepted. On veth a failed XDP transmit is invisible to
//! the program, and one failure mode is worse than loss: XDP_TX bursts into
//! a veth whose peer has NAPI only through GRO can wedge that veth for good,
//! after which every frame the router's own stack sends on it is dropped
//! (docs/operations.md, "veth and containers"). The kernel counts those in
//! the interface's `tx_dropped`, read here from
//! `/sys/class/net/<dev>/statistics/tx_dropped` (the router's own network
//! namespace's sysfs).
//!
//! [`TxDropWatch`] holds the policy and does no I/O: fed one reading per
//! interface per check, it says when to warn (growth since the last
//! warning, at most once per [`WARN_INTERVAL`] per interface).

use std::time::{Duration, Instant};

/// How often the counters are read.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest interval between two warnings about one interface.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// One interface's counter as last read.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TxDropped {
    /// The interface.
    pub interface: String,
    /// The kernel's `tx_dropped` at the last check (None: unreadable).
    pub tx_dropped: Option<u64>,
    /// Growth since the router started watching.
    pub since_start: u64,
}

/// A warning to log: `dropped` more frames on `interface` since the last
/// warning (or the start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxDropWarning {
    /// The interface.
    pub interface: String,
    /// Growth of `tx_dropped` since the last warning.
    pub dropped: u64,
}

#[derive(Debug, Clone)]
struct Watched {
    interface: String,
    /// First reading (None until one succeeded).
    start: Option<u64>,
    last: Option<u64>,
    /// The value at the last warning (or the first reading).
    warned_at_value: u64,
    next_warn: Option<Instant>,
}

/// The policy: which readings call for a warning. No I/O.
#[derive(Debug, Clone)]
pub struct TxDropWatch {
    interfaces: Vec<Watched>,
}

impl TxDropWatch {
    /// Watches `interfaces` (their first reading is the baseline).
    pub fn new(interfaces: &[String]) -> TxDropWatch {
        TxDropWatch {
            interfaces: interfaces
                .iter()
                .map(|name| Watched {
                    interface: name.clone(),
                    start: None,
                    last: None,
                    warned_at_value: 0,
                    next_warn: None,
                })
                .collect(),
        }
    }

    /// The watched interfaces, in order.
    pub fn interfaces(&self) -> impl Iterator<Item = &str> {
        self.interfaces.iter().map(|w| w.interface.as_str())
    }

    /// Feeds the reading of interface `index` (None: unreadable) at `now`.
    /// Returns a warning if its counter grew since the last warning and the
    /// last warning is at least [`WARN_INTERVAL`] old. A counter that goes
    /// backwards (the interface was re-created) becomes the new baseline.
    pub fn observe(
        &mut self,
        now: Instant,
        index: usize,
        reading: Option<u64>,
    ) -> Option<TxDropWarning> {
        let watched = self.interfaces.get_mut(index)?;
        let value = reading?;
        match (watched.start, watched.last) {
            (Some(_), Some(last)) if value >= last => {}
            _ => {
                // First reading, or the counter restarted.
                watched.start = Some(value);
                watched.last = Some(value);
                watched.warned_at_value = value;
                return None;
            }
        }
        watched.last = Some(value);
        if value <= watched.warned_at_value {
            return None;
        }
        if watched.next_warn.is_some_and(|at| now < at) {
            return None;
        }
        let dropped = value - watched.warned_at_value;
        watched.warned_at_value = value;
        watched.next_warn = Some(now + WARN_INTERVAL);
        Some(TxDropWarning {
            interface: watched.interface.clone(),
            dropped,
        })
    }

    /// Every interface's figures, for `xorlay stats`.
    pub fn figures(&self) -> Vec<TxDropped> {
        self.interfaces
            .iter()
            .map(|w| TxDropped {
                interface: w.interface.clone(),
                tx_dropped: w.last,
                since_start: match (w.start, w.last) {
                    (Some(start), Some(last)) => last.saturating_sub(start),
                    _ => 0,
                },
            })
            .collect()
    }
}

/// The shell: reads the counters every [`CHECK_INTERVAL`] and logs the
/// warnings of [`TxDropWatch`].
#[derive(Debug)]
pub struct TxDropMonitor {
    watch: TxDropWatch,
    next_check: Instant,
}

impl TxDropMonitor {
    /// Watches `interfaces`; the first check reads the baseline.
    pub fn new(interfaces: &[String]) -> TxDropMonitor {
        let mut monitor = TxDropMonitor {
            watch: TxDropWatch::new(interfaces),
            next_check: Instant::now(),
        };
        monitor.tick(Instant::now());
        monitor
    }

    /// Reads and checks the counters if a check is due.
    pub fn tick(&mut self, now: Instant) {
        if now < self.next_check {
            return;
        }
        self.next_check = now + CHECK_INTERVAL;
        let names: Vec<String> = self.watch.interfaces().map(str::to_string).collect();
        for (index, name) in names.iter().enumerate() {
            if let Some(warning) = self.watch.observe(now, index, read_tx_dropped(name)) {
                log::warn!(
                    "{}: {} frame(s) dropped on transmit (tx_dropped) since the last check or warning; \
                     frames this router sends there are being lost. On a veth, the peer needs an XDP \
                     program (XDP_PASS is enough) to take the fast path's XDP_TX/XDP_REDIRECT frames: \
                     with GRO alone an XDP_TX burst can wedge the link (docs/operations.md). \
                     fwd_tx/fwd_redirect count verdicts, not frames sent",
                    warning.interface,
                    warning.dropped
                );
            }
        }
    }

    /// Every interface's figures, for `xorlay stats`.
    pub fn figures(&self) -> Vec<TxDropped> {
        self.watch.figures()
    }
}

/// `tx_dropped` of interface `name` in this network namespace, if readable.
pub fn read_tx_dropped(name: &str) -> Option<u64> {
    // An interface name never holds '/', but it comes from the config.
    if name.is_empty() || name.contains('/') || name.contains("..") {
        return None;
    }
    std::fs::read_to_string(format!("/sys/class/net/{name}/statistics/tx_dropped"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> TxDropWatch {
        TxDropWatch::new(&["a".to_string(), "b".to_string()])
    }

    #[test]
    fn first_reading_is_the_baseline() {
        let mut w = watch();
        let t = Instant::now();
        assert_eq!(w.observe(t, 0, Some(500)), None);
        assert_eq!(w.observe(t, 0, Some(500)), None);
        let f = w.figures();
        assert_eq!(f[0].tx_dropped, Some(500));
        assert_eq!(f[0].since_start, 0);
        assert_eq!(f[1].tx_dropped, None);
    }

    #[test]
    fn growth_warns_at_most_once_per_interval_per_interface() {
        let mut w = watch();
        let t = Instant::now();
        w.observe(t, 0, Some(10));
        w.observe(t, 1, Some(0));
        let warning = w.observe(t + Duration::from_secs(1), 0, Some(15));
        assert_eq!(
            warning,
            Some(TxDropWarning {
                interface: "a".into(),
                dropped: 5
            })
        );
        // Within the interval: quiet, the growth is kept for later.
        assert_eq!(w.observe(t + Duration::from_secs(2), 0, Some(40)), None);
        // The other interface has its own limit.
        assert!(w.observe(t + Duration::from_secs(2), 1, Some(1)).is_some());
        assert_eq!(w.observe(t + Duration::from_secs(10), 0, Some(41)), None);
        let later = w.observe(t + Duration::from_secs(11), 0, Some(42));
        assert_eq!(later.map(|w| w.dropped), Some(27));
        // No growth: no warning, however late.
        assert_eq!(w.observe(t + Duration::from_secs(60), 0, Some(42)), None);
        assert_eq!(w.figures()[0].since_start, 32);
    }

    #[test]
    fn unreadable_and_restarted_counters() {
        let mut w = watch();
        let t = Instant::now();
        assert_eq!(w.observe(t, 0, None), None);
        w.observe(t, 0, Some(100));
        assert_eq!(w.observe(t, 0, None), None);
        // Went backwards: the interface was re-created; a new baseline.
        assert_eq!(w.observe(t + Duration::from_secs(20), 0, Some(3)), None);
        assert_eq!(w.figures()[0].since_start, 0);
        assert!(w.observe(t + Duration::from_secs(21), 0, Some(4)).is_some());
        assert_eq!(w.observe(t, 7, Some(1)), None, "no such interface");
    }

    #[test]
    fn odd_names_are_not_read() {
        assert_eq!(read_tx_dropped("../../etc"), None);
        assert_eq!(read_tx_dropped(""), None);
        assert!(read_tx_dropped("lo").is_some());
    }
}
