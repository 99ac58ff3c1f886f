//! Load shedding for the workers: when to make XDP drop data packets before
//! the kernel builds an skb for them (sans-IO policies). Two of them:
//! [`Credits`], each worker's side of the window XDP keeps per worker (the
//! worker feeds it; `io::backlog` holds the map), and the budget below, the
//! fallback where credits cannot work ([`Shedder`]; the control thread
//! feeds it and writes the budget into the `xorlay_shed` map).
//!
//! Receive livelock: a packet the workers will never read still costs the
//! kernel an skb, the UDP lookup and a socket enqueue before the full queue
//! drops it. Offered far beyond what the workers serve, that work takes
//! the CPU the workers need, and goodput collapses. The cure is to drop the
//! excess as early as possible: in XDP.
//!
//! The signal is the workers' sockets dropping (`SK_MEMINFO_DROPS`): their
//! queues overflow, so the workers are the bottleneck. Then the budget
//! becomes [`ShedConfig::headroom`] of what the workers took: of the
//! highest rate they sustained recently without drops when the overload
//! just began (in that first window they were already starved, so their
//! intake then says little about their capacity), of the last window's
//! intake when the drops go on. While XDP sheds (the budget binds) and the sockets do not
//! drop, the budget probes upward by [`ShedConfig::probe_up`] per window (the
//! workers may serve more once XDP takes the load off the CPU). A window in
//! which XDP shed nothing means the load fits under the budget: it is
//! lifted. Decisions are made once per [`ShedConfig::window`].

use std::time::{Duration, Instant};

/// A budget: packets per second and a burst, both at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Sustained packets per second to the workers.
    pub pps: u32,
    /// Packets at once.
    pub burst: u32,
}

/// Tuning of the [`Shedder`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShedConfig {
    /// How long a measurement window lasts.
    pub window: Duration,
    /// Budget = this fraction of the rate the workers took while dropping.
    pub headroom: f64,
    /// Budget growth per window without socket drops.
    pub probe_up: f64,
    /// Lowest budget, packets per second.
    pub min_pps: u32,
}

impl Default for ShedConfig {
    fn default() -> ShedConfig {
        ShedConfig {
            window: Duration::from_millis(100),
            headroom: 0.9,
            probe_up: 1.1,
            min_pps: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    drops: u64,
    taken: u64,
    shed: u64,
}

/// The shedding policy (see the module documentation).
#[derive(Debug, Clone)]
pub struct Shedder {
    config: ShedConfig,
    last: Option<Sample>,
    budget: Option<Budget>,
    /// The highest intake of a window without socket drops, decaying 1% per
    /// window: what the workers are known to sustain.
    sustained: f64,
    /// The last window had socket drops.
    was_dropping: bool,
    /// Times a budget was set or changed.
    pub adjustments: u64,
}

impl Shedder {
    /// A shedder without a budget.
    pub fn new(config: ShedConfig) -> Shedder {
        Shedder {
            config,
            last: None,
            budget: None,
            sustained: 0.0,
            was_dropping: false,
            adjustments: 0,
        }
    }

    /// The budget in force.
    pub fn budget(&self) -> Option<Budget> {
        self.budget
    }

    /// Whether a window has passed since the last observation (so the
    /// caller can skip reading its counters until then).
    pub fn due(&self, now: Instant) -> bool {
        self.last
            .is_none_or(|last| now.saturating_duration_since(last.at) >= self.config.window)
    }

    /// Feeds the totals so far: packets the workers' sockets dropped,
    /// packets the workers took, packets XDP shed. Returns the new budget
    /// when it changed (`Some(None)`: lifted).
    pub fn observe(
        &mut self,
        now: Instant,
        drops: u64,
        taken: u64,
        shed: u64,
    ) -> Option<Option<Budget>> {
        let sample = Sample {
            at: now,
            drops,
            taken,
            shed,
        };
        let Some(last) = self.last else {
            self.last = Some(sample);
            return None;
        };
        let elapsed = now.saturating_duration_since(last.at);
        if elapsed < self.config.window {
            return None;
        }
        self.last = Some(sample);
        let secs = elapsed.as_secs_f64();
        // Counters that went backwards (a restarted worker) read as zero.
        let rate = taken.saturating_sub(last.taken) as f64 / secs;
        let dropped = drops > last.drops;
        let binding = shed > last.shed;
        self.sustained *= 0.99;
        if !dropped {
            self.sustained = self.sustained.max(rate);
        }
        let was_dropping = std::mem::replace(&mut self.was_dropping, dropped);
        let next = if dropped {
            let base = if was_dropping {
                rate
            } else {
                rate.max(self.sustained)
            };
            Some(self.budget_of(base * self.config.headroom))
        } else {
            match self.budget {
                None => None,
                Some(_) if !binding => None,
                // Far below what the workers sustained recently (the budget
                // was set while they were stalled, say): double, so a
                // stall does not throttle the traffic for seconds.
                Some(b) if f64::from(b.pps) < self.sustained * 0.5 => {
                    Some(self.budget_of(f64::from(b.pps) * 2.0))
                }
                Some(b) => Some(self.budget_of(f64::from(b.pps) * self.config.probe_up)),
            }
        };
        if next == self.budget {
            return None;
        }
        self.budget = next;
        self.adjustments += 1;
        Some(next)
    }

    fn budget_of(&self, pps: f64) -> Budget {
        let pps = if pps.is_finite() {
            pps.clamp(f64::from(self.config.min_pps), f64::from(u32::MAX)) as u32
        } else {
            self.config.min_pps
        };
        // 10 ms of the rate at once: small enough for a socket queue.
        Budget {
            pps,
            burst: (pps / 100).max(32),
        }
    }
}

/// Tuning of [`Credits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditConfig {
    /// Socket receive memory one queued datagram is taken to use (its skb's
    /// truesize: a page on veth's XDP path, about half that on most NIC
    /// drivers), to turn the socket's receive buffer into packets.
    pub truesize: u32,
    /// Share of the socket's receive buffer the window may fill, in
    /// thousandths: below the full queue, so the kernel never drops there.
    pub fill_permille: u32,
    /// Smallest and largest window, packets.
    pub min_window: u32,
    /// See `min_window`.
    pub max_window: u32,
    /// How often the worker looks at its socket queue (one system call) to
    /// take back credits of packets lost before the socket.
    pub look_every: Duration,
}

impl Default for CreditConfig {
    fn default() -> CreditConfig {
        CreditConfig {
            truesize: 4096,
            fill_permille: 500,
            min_window: 16,
            max_window: 4096,
            look_every: Duration::from_millis(1),
        }
    }
}

/// Load shedding by queue, one worker's side (sans-IO; the worker feeds it
/// what it read and what its socket holds, and writes the results into
/// `xorlay_backlog`). XDP passes a data packet to the worker only while
/// fewer than [`Credits::window`] of the packets it passed are unread
/// (`admitted - consumed`), so the socket queue never overflows, however
/// long the receive path keeps the CPU from the worker, and the worker never
/// waits for packets XDP dropped (unlike the budget, [`Shedder`], which can
/// admit less than the worker reads). `consumed` is the worker's count of
/// the data packets it read. A packet XDP passed that never reaches the
/// socket would hold its credit forever; so whenever the worker finds its
/// queue empty, everything XDP admitted so far counts as consumed.
#[derive(Debug, Clone)]
pub struct Credits {
    config: CreditConfig,
    consumed: u64,
    looked: Option<Instant>,
    /// Times an empty queue showed credits lost before the socket.
    pub resyncs: u64,
}

impl Credits {
    /// A worker's side with nothing read.
    pub fn new(config: CreditConfig) -> Credits {
        Credits {
            config,
            consumed: 0,
            looked: None,
            resyncs: 0,
        }
    }

    /// The window for a socket whose receive buffer is `rcvbuf` bytes
    /// (`SK_MEMINFO_RCVBUF`).
    pub fn window(&self, rcvbuf: u32) -> u32 {
        let bytes = u64::from(rcvbuf) * u64::from(self.config.fill_permille) / 1000;
        let packets = bytes / u64::from(self.config.truesize.max(1));
        let packets = u32::try_from(packets).unwrap_or(u32::MAX);
        packets.clamp(
            self.config.min_window,
            self.config.max_window.max(self.config.min_window),
        )
    }

    /// The count published last.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// The worker read `packets` more data packets: the count to publish.
    pub fn read(&mut self, packets: u64) -> u64 {
        self.consumed = self.consumed.wrapping_add(packets);
        self.consumed
    }

    /// Whether to look at the socket queue at `now` (once per
    /// [`CreditConfig::look_every`]). Counts the look if it says yes.
    pub fn wants_look(&mut self, now: Instant) -> bool {
        let due = self
            .looked
            .is_none_or(|at| now.saturating_duration_since(at) >= self.config.look_every);
        if due {
            self.looked = Some(now);
        }
        due
    }

    /// The socket queue holds `queued` bytes, and XDP has admitted
    /// `admitted` packets (read before the queue): the count to publish. An
    /// empty queue means every admitted packet was read or is lost, so the
    /// count catches up with `admitted`.
    pub fn queue_seen(&mut self, queued: u32, admitted: u64) -> u64 {
        if queued == 0 && admitted != self.consumed {
            if admitted > self.consumed {
                self.resyncs += 1;
            }
            self.consumed = admitted;
        }
        self.consumed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn no_budget_without_drops() {
        let t0 = Instant::now();
        let mut s = Shedder::new(ShedConfig::default());
        assert!(s.due(t0));
        assert_eq!(s.observe(t0, 0, 0, 0), None);
        assert!(!s.due(at(t0, 99)));
        assert!(s.due(at(t0, 100)));
        for i in 1..20u64 {
            assert_eq!(s.observe(at(t0, 100 * i), 0, 10_000 * i, 0), None);
        }
        assert_eq!(s.budget(), None);
    }

    #[test]
    fn drops_set_the_budget_below_what_the_workers_took() {
        let t0 = Instant::now();
        let mut s = Shedder::new(ShedConfig::default());
        s.observe(t0, 0, 0, 0);
        // 100 ms: 10,000 taken (100 k/s), 500 dropped.
        let set = s.observe(at(t0, 100), 500, 10_000, 0).expect("a change");
        let b = set.expect("a budget");
        assert_eq!(b.pps, 90_000);
        assert_eq!(b.burst, 900);
        // Windows shorter than 100 ms decide nothing.
        assert_eq!(s.observe(at(t0, 150), 900, 15_000, 0), None);
    }

    #[test]
    fn the_budget_probes_up_and_is_lifted_when_the_load_falls() {
        let t0 = Instant::now();
        let mut s = Shedder::new(ShedConfig::default());
        s.observe(t0, 0, 0, 0);
        s.observe(at(t0, 100), 10, 10_000, 0);
        assert_eq!(s.budget().map(|b| b.pps), Some(90_000));
        // XDP sheds, the workers take the budget, no drops: probe up 10%.
        let up = s.observe(at(t0, 200), 10, 19_000, 40_000).expect("probe");
        assert_eq!(up.map(|b| b.pps), Some(99_000));
        // Drops again at 98 k/s: back to 90% of it.
        let down = s.observe(at(t0, 300), 20, 28_800, 80_000).expect("cut");
        assert_eq!(down.map(|b| b.pps), Some(88_200));
        // Starved workers (5 k/s) while XDP still sheds and the sockets do
        // not drop: the budget stays bound and keeps probing; never lifted.
        let starved = s.observe(at(t0, 400), 20, 29_300, 120_000).expect("probe");
        assert_eq!(starved.map(|b| b.pps), Some(97_020));
        // A window without shedding: the load fits, lifted.
        assert_eq!(s.observe(at(t0, 500), 20, 31_300, 120_000), Some(None));
        assert_eq!(s.budget(), None);
        assert_eq!(s.adjustments, 5);
    }

    #[test]
    fn an_overload_starts_from_the_capacity_seen_before() {
        let t0 = Instant::now();
        let mut s = Shedder::new(ShedConfig::default());
        s.observe(t0, 0, 0, 0);
        // 100 k/s served without drops.
        assert_eq!(s.observe(at(t0, 100), 0, 10_000, 0), None);
        // Overload: the starved workers took 20 k/s and their sockets drop.
        let first = s.observe(at(t0, 200), 50, 12_000, 0).expect("set");
        assert_eq!(first.map(|b| b.pps), Some(89_100)); // 0.9 x 99 k (decayed)
        // The drops go on: now the intake counts.
        let second = s.observe(at(t0, 300), 90, 14_000, 10_000).expect("cut");
        assert_eq!(second.map(|b| b.pps), Some(18_000));
    }

    #[test]
    fn a_budget_set_during_a_stall_recovers_quickly() {
        let t0 = Instant::now();
        let mut s = Shedder::new(ShedConfig::default());
        s.observe(t0, 0, 0, 0);
        // 100 k/s served without drops for a while.
        let mut taken = 0;
        for w in 1..=5u64 {
            taken += 10_000;
            assert_eq!(s.observe(at(t0, 100 * w), 0, taken, 0), None);
        }
        // Two windows of drops while the workers stalled (1 k/s taken):
        // the second one sets the budget from the intake.
        taken += 100;
        s.observe(at(t0, 600), 10, taken, 0);
        taken += 100;
        let low = s
            .observe(at(t0, 700), 20, taken, 0)
            .expect("cut")
            .expect("budget");
        assert_eq!(low.pps, 1000);
        // The stall is over; XDP sheds and the sockets are calm: the budget
        // doubles while far below the ~95 k/s sustained before, then
        // probes by 10%.
        let mut pps = Vec::new();
        let mut shed = 0;
        for w in 8..=16u64 {
            taken += u64::from(s.budget().map_or(0, |b| b.pps)) / 10;
            shed += 1000;
            if let Some(Some(b)) = s.observe(at(t0, 100 * w), 20, taken, shed) {
                pps.push(b.pps);
            }
        }
        assert_eq!(
            &pps[..7],
            &[2000, 4000, 8000, 16_000, 32_000, 64_000, 70_400]
        );
    }

    #[test]
    fn floor_and_counter_resets_are_safe() {
        let t0 = Instant::now();
        let mut s = Shedder::new(ShedConfig::default());
        s.observe(t0, 100, 1_000_000, 0);
        // Taken went backwards (a worker restarted): rate 0, budget at the floor.
        let b = s
            .observe(at(t0, 100), 200, 5, 0)
            .expect("set")
            .expect("budget");
        assert_eq!(b.pps, 1000);
        assert_eq!(b.burst, 32);
    }

    #[test]
    fn the_window_is_half_the_receive_buffer_in_pages_within_bounds() {
        let c = Credits::new(CreditConfig::default());
        assert_eq!(c.window(8 * 1024 * 1024), 1024);
        assert_eq!(c.window(425_984), 52);
        assert_eq!(c.window(0), 16);
        assert_eq!(c.window(u32::MAX), 4096);
    }

    #[test]
    fn credits_count_reads_and_catch_up_only_on_an_empty_queue() {
        let mut c = Credits::new(CreditConfig::default());
        assert_eq!(c.read(10), 10);
        assert_eq!(c.read(0), 10);
        // XDP admitted 15; 5 are still queued: nothing changes.
        assert_eq!(c.queue_seen(5 * 4096, 15), 10);
        assert_eq!(c.resyncs, 0);
        // The queue drained with 3 of them lost before the socket.
        assert_eq!(c.read(2), 12);
        assert_eq!(c.queue_seen(0, 15), 15);
        assert_eq!(c.resyncs, 1);
        // Read ahead of admitted (a packet admitted after the look): the
        // count may run ahead, and an empty queue brings it back.
        assert_eq!(c.read(1), 16);
        assert_eq!(c.queue_seen(0, 16), 16);
        assert_eq!(c.queue_seen(0, 15), 15);
        assert_eq!(c.resyncs, 1);
    }

    #[test]
    fn credits_look_at_the_queue_once_per_interval() {
        let mut c = Credits::new(CreditConfig::default());
        let t0 = Instant::now();
        assert!(c.wants_look(t0));
        assert!(!c.wants_look(t0 + Duration::from_micros(999)));
        assert!(c.wants_look(t0 + Duration::from_millis(1)));
        assert!(!c.wants_look(t0));
    }
}
