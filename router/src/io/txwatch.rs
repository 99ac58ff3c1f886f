//! Watches the transmit losses of the interfaces XDP is attached to, and
//! warns when they grow.
//!
//! The fast path's `fwd_tx` and `fwd_redirect` count XDP verdicts, not
//! frames a driver accepted. A failed XDP transmit is invisible to the
//! program, and on veth one failure mode is worse than loss: `XDP_TX`
//! bursts into a veth whose peer has NAPI only through GRO can wedge it for
//! good, after which every `XDP_TX` frame is lost and the router's own
//! sends through the peer's ring are dropped (docs/operations.md, "veth and
//! containers"). Two counters show it, read once per [`CHECK_INTERVAL`]:
//!
//! - `tx_dropped`, from `/sys/class/net/<dev>/statistics/tx_dropped` (the
//!   router's own network namespace's sysfs): sends of the stack dropped,
//!   and on veth (kernel 6.18) the `XDP_TX` frames its peer did not take;
//! - the driver's XDP transmit errors, from `ethtool -S` (the
//!   `SIOCETHTOOL` ioctl: `ETHTOOL_GSTRINGS` and `ETHTOOL_GSTATS`, three
//!   calls per interface): the sum of the statistics whose name ends in
//!   `xdp_tx_errors` or `xdp_xmit_errors` (veth's per-queue names; absent
//!   from drivers without them, then not reported).
//!
//! [`TxLossWatch`] holds the policy and does no I/O: fed one reading per
//! counter per interface per check, it says when to warn (growth since the
//! last warning, at most once per [`WARN_INTERVAL`] per interface).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How often the counters are read.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest interval between two warnings about one interface.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// Counters watched per interface: `tx_dropped`, XDP transmit errors.
pub const COUNTERS: usize = 2;
/// Most driver statistics read per interface (veth has a few dozen).
const ETHTOOL_STATS_MAX: u32 = 4096;

/// One counter of one interface as last read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Figure {
    /// The kernel's value at the last check (None: unreadable or absent).
    pub value: Option<u64>,
    /// Growth since the router started watching.
    pub since_start: u64,
}

/// One interface's figures, for `xorlay stats`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TxLoss {
    /// The interface.
    pub interface: String,
    /// Its `tx_dropped`.
    pub tx_dropped: Figure,
    /// Its driver's XDP transmit errors (`xdp_tx_errors` and
    /// `xdp_xmit_errors` of `ethtool -S`, summed).
    pub xdp_tx_errors: Figure,
}

/// A warning to log: growth of each counter on `interface` since the last
/// warning (or the start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxLossWarning {
    /// The interface.
    pub interface: String,
    /// Growth of `tx_dropped`.
    pub tx_dropped: u64,
    /// Growth of the XDP transmit errors.
    pub xdp_tx_errors: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counter {
    /// First reading (None until one succeeded).
    start: Option<u64>,
    last: Option<u64>,
    /// The value at the last warning (or the baseline).
    warned_at: u64,
}

impl Counter {
    /// Takes a reading; returns its growth since the last warning.
    fn observe(&mut self, reading: Option<u64>) -> u64 {
        let Some(value) = reading else {
            return 0;
        };
        match self.last {
            Some(last) if value >= last => {}
            _ => {
                // First reading, or the counter restarted (the interface
                // was re-created): a new baseline.
                *self = Counter {
                    start: Some(value),
                    last: Some(value),
                    warned_at: value,
                };
                return 0;
            }
        }
        self.last = Some(value);
        value - self.warned_at
    }

    fn figure(&self) -> Figure {
        Figure {
            value: self.last,
            since_start: match (self.start, self.last) {
                (Some(start), Some(last)) => last.saturating_sub(start),
                _ => 0,
            },
        }
    }
}

#[derive(Debug, Clone)]
struct Watched {
    interface: String,
    counters: [Counter; COUNTERS],
    next_warn: Option<Instant>,
}

/// The policy: which readings call for a warning. No I/O.
#[derive(Debug, Clone)]
pub struct TxLossWatch {
    interfaces: Vec<Watched>,
}

impl TxLossWatch {
    /// Watches `interfaces` (their first readings are the baseline).
    pub fn new(interfaces: &[String]) -> TxLossWatch {
        TxLossWatch {
            interfaces: interfaces
                .iter()
                .map(|name| Watched {
                    interface: name.clone(),
                    counters: [Counter::default(); COUNTERS],
                    next_warn: None,
                })
                .collect(),
        }
    }

    /// The watched interfaces, in order.
    pub fn interfaces(&self) -> impl Iterator<Item = &str> {
        self.interfaces.iter().map(|w| w.interface.as_str())
    }

    /// Feeds the readings of interface `index` at `now` (`tx_dropped`, XDP
    /// transmit errors; None: unreadable). Returns a warning if a counter
    /// grew since the last warning and the last warning is at least
    /// [`WARN_INTERVAL`] old; growth within the interval is reported by the
    /// next warning.
    pub fn observe(
        &mut self,
        now: Instant,
        index: usize,
        readings: [Option<u64>; COUNTERS],
    ) -> Option<TxLossWarning> {
        let watched = self.interfaces.get_mut(index)?;
        let mut growth = [0u64; COUNTERS];
        for (i, reading) in readings.into_iter().enumerate() {
            growth[i] = watched.counters[i].observe(reading);
        }
        if growth.iter().all(|g| *g == 0) {
            return None;
        }
        if watched.next_warn.is_some_and(|at| now < at) {
            return None;
        }
        for counter in &mut watched.counters {
            if let Some(last) = counter.last {
                counter.warned_at = last;
            }
        }
        watched.next_warn = Some(now + WARN_INTERVAL);
        Some(TxLossWarning {
            interface: watched.interface.clone(),
            tx_dropped: growth[0],
            xdp_tx_errors: growth[1],
        })
    }

    /// Every interface's figures, for `xorlay stats`.
    pub fn figures(&self) -> Vec<TxLoss> {
        self.interfaces
            .iter()
            .map(|w| TxLoss {
                interface: w.interface.clone(),
                tx_dropped: w.counters[0].figure(),
                xdp_tx_errors: w.counters[1].figure(),
            })
            .collect()
    }
}

/// The shell: reads the counters every [`CHECK_INTERVAL`] and logs the
/// warnings of [`TxLossWatch`].
#[derive(Debug)]
pub struct TxLossMonitor {
    watch: TxLossWatch,
    ethtool: Option<Ethtool>,
    next_check: Instant,
}

impl TxLossMonitor {
    /// Watches `interfaces`; the first check reads the baseline.
    pub fn new(interfaces: &[String]) -> TxLossMonitor {
        let ethtool = Ethtool::open();
        if ethtool.is_none() {
            log::warn!(
                "no socket for ethtool statistics: XDP transmit errors are not watched (tx_dropped is)"
            );
        }
        let mut monitor = TxLossMonitor {
            watch: TxLossWatch::new(interfaces),
            ethtool,
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
            let readings = [
                read_tx_dropped(name),
                self.ethtool.as_ref().and_then(|e| e.xdp_tx_errors(name)),
            ];
            if let Some(w) = self.watch.observe(now, index, readings) {
                log::warn!(
                    "{}: frames lost on transmit since the last check or warning: tx_dropped +{} \
                     (veth counts its XDP_TX losses there too), XDP transmit errors +{} (ethtool \
                     -S: xdp_tx_errors, xdp_xmit_errors). xdp.fwd_tx/fwd_redirect count verdicts, \
                     not frames sent. \
                     On a veth, the peer needs an XDP program (XDP_PASS is enough) to take the \
                     fast path's frames: with GRO alone an XDP_TX burst can wedge the link \
                     (docs/operations.md, \"veth and containers\")",
                    w.interface,
                    w.tx_dropped,
                    w.xdp_tx_errors
                );
            }
        }
    }

    /// Every interface's figures, for `xorlay stats`.
    pub fn figures(&self) -> Vec<TxLoss> {
        self.watch.figures()
    }
}

/// Whether `name` can be an interface name (it comes from the config).
fn plausible_name(name: &str) -> bool {
    !name.is_empty() && name.len() < 16 && !name.contains('/') && name != "." && name != ".."
}

/// `tx_dropped` of interface `name` in this network namespace, if readable.
pub fn read_tx_dropped(name: &str) -> Option<u64> {
    if !plausible_name(name) {
        return None;
    }
    std::fs::read_to_string(format!("/sys/class/net/{name}/statistics/tx_dropped"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// linux/sockios.h and linux/ethtool.h.
const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSTATS: u32 = 0x1d;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETH_SS_STATS: u32 = 1;
const ETH_GSTRING_LEN: usize = 32;

/// struct ifreq with the `ifr_data` member of its union (40 bytes).
#[repr(C)]
struct IfreqData {
    name: [u8; 16],
    data: *mut libc::c_void,
    pad: [u8; 16],
}

/// `buf` as the u32 words it holds, in memory order (the ethtool structs
/// mix u32 and u64 fields; u64 storage keeps the u64 ones aligned).
fn words32(buf: &mut [u64]) -> &mut [u32] {
    // SAFETY: the memory of `buf` is initialised, aligned for u32 and holds
    // exactly twice as many u32 as u64; the borrow is carried over.
    unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u32>(), buf.len() * 2) }
}

/// A socket for the `SIOCETHTOOL` ioctl.
#[derive(Debug)]
pub struct Ethtool {
    socket: OwnedFd,
}

impl Ethtool {
    /// A datagram socket to issue the ioctl on (None if none can be made).
    pub fn open() -> Option<Ethtool> {
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return None;
        }
        Some(Ethtool {
            // SAFETY: fd is a new descriptor owned by nobody else.
            socket: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// One ethtool command on interface `name`, `buf` its argument (the
    /// command word first). False if the kernel refused it.
    fn command(&self, name: &str, buf: &mut [u64]) -> bool {
        let mut ifr = IfreqData {
            name: [0; 16],
            data: buf.as_mut_ptr().cast(),
            pad: [0; 16],
        };
        if !plausible_name(name) {
            return false;
        }
        ifr.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: ifr is a valid struct ifreq whose ifr_data points at
        // `buf`, which each caller sizes for the command's reply (the
        // kernel writes no more than the counts the caller put in it).
        let rc = unsafe {
            libc::ioctl(
                self.socket.as_raw_fd(),
                SIOCETHTOOL as _,
                &mut ifr as *mut IfreqData,
            )
        };
        rc == 0
    }

    /// Number of driver statistics of `name` (`ethtool -S`).
    fn stats_count(&self, name: &str) -> Option<u32> {
        // struct ethtool_sset_info: cmd, reserved (u32), sset_mask (u64),
        // data[1] (u32).
        let mut buf = [0u64; 3];
        words32(&mut buf)[0] = ETHTOOL_GSSET_INFO;
        buf[1] = 1u64 << ETH_SS_STATS;
        if !self.command(name, &mut buf) || buf[1] & (1u64 << ETH_SS_STATS) == 0 {
            return None;
        }
        let count = words32(&mut buf)[4];
        (count <= ETHTOOL_STATS_MAX).then_some(count)
    }

    /// The sum of the statistics of `name` whose names end in
    /// `xdp_tx_errors` or `xdp_xmit_errors`; None if it has none (or the
    /// driver answers no statistics).
    pub fn xdp_tx_errors(&self, name: &str) -> Option<u64> {
        let count = self.stats_count(name)?;
        if count == 0 {
            return None;
        }
        let n = count as usize;
        // struct ethtool_gstrings: cmd, string_set, len (3 x u32), data.
        let mut strings = vec![0u64; (12 + n * ETH_GSTRING_LEN).div_ceil(8)];
        let head = words32(&mut strings);
        head[0] = ETHTOOL_GSTRINGS;
        head[1] = ETH_SS_STATS;
        head[2] = count;
        if !self.command(name, &mut strings) {
            return None;
        }
        // struct ethtool_stats: cmd, n_stats (2 x u32), data (u64s).
        let mut stats = vec![0u64; 1 + n];
        let head = words32(&mut stats);
        head[0] = ETHTOOL_GSTATS;
        head[1] = count;
        if !self.command(name, &mut stats) {
            return None;
        }
        let bytes: Vec<u8> = strings.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let names = bytes.get(12..12 + n * ETH_GSTRING_LEN)?;
        let mut sum = None;
        for (i, raw) in names.chunks_exact(ETH_GSTRING_LEN).enumerate() {
            let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
            let Ok(stat) = std::str::from_utf8(&raw[..end]) else {
                continue;
            };
            if stat.ends_with("xdp_tx_errors") || stat.ends_with("xdp_xmit_errors") {
                let value = stats.get(1 + i).copied().unwrap_or(0);
                sum = Some(sum.unwrap_or(0u64).saturating_add(value));
            }
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> TxLossWatch {
        TxLossWatch::new(&["a".to_string(), "b".to_string()])
    }

    #[test]
    fn first_reading_is_the_baseline() {
        let mut w = watch();
        let t = Instant::now();
        assert_eq!(w.observe(t, 0, [Some(500), Some(7)]), None);
        assert_eq!(w.observe(t, 0, [Some(500), Some(7)]), None);
        let f = w.figures();
        assert_eq!(f[0].tx_dropped.value, Some(500));
        assert_eq!(f[0].tx_dropped.since_start, 0);
        assert_eq!(f[0].xdp_tx_errors.value, Some(7));
        assert_eq!(f[1].tx_dropped, Figure::default());
    }

    #[test]
    fn growth_warns_at_most_once_per_interval_per_interface() {
        let mut w = watch();
        let t = Instant::now();
        let s = Duration::from_secs;
        w.observe(t, 0, [Some(10), Some(0)]);
        w.observe(t, 1, [Some(0), None]);
        assert_eq!(
            w.observe(t + s(1), 0, [Some(15), Some(0)]),
            Some(TxLossWarning {
                interface: "a".into(),
                tx_dropped: 5,
                xdp_tx_errors: 0
            })
        );
        // Within the interval: quiet, the growth is kept for later.
        assert_eq!(w.observe(t + s(2), 0, [Some(40), Some(300)]), None);
        // The other interface has its own limit.
        assert!(w.observe(t + s(2), 1, [Some(1), None]).is_some());
        assert_eq!(w.observe(t + s(10), 0, [Some(41), Some(300)]), None);
        assert_eq!(
            w.observe(t + s(11), 0, [Some(42), Some(301)]),
            Some(TxLossWarning {
                interface: "a".into(),
                tx_dropped: 27,
                xdp_tx_errors: 301
            })
        );
        // No growth: no warning, however late.
        assert_eq!(w.observe(t + s(60), 0, [Some(42), Some(301)]), None);
        // XDP transmit errors alone warn too (the wedge with offload on).
        assert!(w.observe(t + s(61), 0, [Some(42), Some(2000)]).is_some());
        let f = w.figures();
        assert_eq!(f[0].tx_dropped.since_start, 32);
        assert_eq!(f[0].xdp_tx_errors.since_start, 2000);
    }

    #[test]
    fn unreadable_and_restarted_counters() {
        let mut w = watch();
        let t = Instant::now();
        assert_eq!(w.observe(t, 0, [None, None]), None);
        w.observe(t, 0, [Some(100), None]);
        assert_eq!(w.observe(t, 0, [None, None]), None);
        // Went backwards: the interface was re-created; a new baseline.
        assert_eq!(
            w.observe(t + Duration::from_secs(20), 0, [Some(3), None]),
            None
        );
        assert_eq!(w.figures()[0].tx_dropped.since_start, 0);
        assert!(
            w.observe(t + Duration::from_secs(21), 0, [Some(4), None])
                .is_some()
        );
        assert_eq!(w.observe(t, 7, [Some(1), None]), None, "no such interface");
    }

    #[test]
    fn odd_names_are_not_read() {
        assert_eq!(read_tx_dropped("../../etc"), None);
        assert_eq!(read_tx_dropped(""), None);
        assert_eq!(read_tx_dropped("a-name-far-too-long"), None);
        assert!(read_tx_dropped("lo").is_some());
    }

    #[test]
    fn ethtool_reads_veth_xdp_errors_and_not_lo() {
        let Some(ethtool) = Ethtool::open() else {
            panic!("no datagram socket");
        };
        // lo has no driver statistics; an absent interface neither.
        assert_eq!(ethtool.xdp_tx_errors("lo"), None);
        assert_eq!(ethtool.xdp_tx_errors("xl-no-such-if"), None);
        assert_eq!(ethtool.xdp_tx_errors("../x"), None);
    }
}
