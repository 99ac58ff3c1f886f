//! The XDP counting sink: counts the benchmark's overlay data packets in
//! the kernel (`bench/ebpf/xdpsink.bpf.c`, native XDP on the sink's
//! interface) and drops them there, so the sink keeps up with rates that a
//! UDP socket cannot take. It reports in the socket sink's shape
//! ([`SinkResult`]).
//!
//! What it counts, and how that differs from [`crate::loadgen::sink`]:
//! only UDP datagrams to the configured port that start with an overlay
//! header (magic, version) of type DATA are counted and dropped; everything
//! else (ARP, other ports, junk, overlay CONTROL packets, IP fragments,
//! IPv6 with extension headers) passes to the stack untouched, so it is
//! neither `received` nor `malformed` here, where the socket sink would
//! count junk on its port as both. Of the counted packets, those not to
//! `me`, with an inconsistent `payload_len`, hop limit 0 or a payload
//! shorter than the 16-byte stamp are `malformed`; the rest are sorted into
//! `stale`, `valid`, `unique`, `duplicates` and `reordered` exactly as the
//! socket sink does.
//!
//! Trials: [`XdpSink::begin_trial`] writes a new epoch next to the trial
//! number into one map entry. Everything the program keeps (per-CPU
//! counters and histogram, the duplicate bitmap, the highest packet number)
//! is tagged with the epoch it was written in and reads as empty in
//! another, so nothing is cleared from userspace and a packet in flight
//! during the switch is counted wholly in one trial or the other.
//!
//! Latency precision: the program buckets one-way latency log-linearly,
//! exact below 32 ns and above in 16 buckets per power of two (see
//! [`bucket_of`]). [`XdpSink::result`] records each bucket's midpoint, so a
//! recorded value is within 1/32 (3.2 %) of the true one, plus the 0.1 % of
//! the 3-significant-digit HDR histogram it lands in. Latencies are clamped
//! to 1 ns .. 10 s, as in the socket sink.

use anyhow::{Context, bail};
use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::{TestRun, TestRunOptions, Xdp, XdpMode};
use hdrhistogram::Histogram;
use xorlay::core::NodeId;

use crate::loadgen::SinkResult;

/// The compiled sink program.
static XDPSINK_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdpsink.bpf.o"));

/// Counter indexes in [`Stats::counters`] (XLS_* in the C program).
const COUNTER_RECEIVED: usize = 0;
const COUNTER_VALID: usize = 1;
const COUNTER_UNIQUE: usize = 2;
const COUNTER_DUPLICATES: usize = 3;
const COUNTER_REORDERED: usize = 4;
const COUNTER_STALE: usize = 5;
const COUNTER_MALFORMED: usize = 6;
const COUNTER_UNCHECKED: usize = 7;
const COUNTERS: usize = 8;

/// Latency histogram buckets (XLS_BUCKETS); [`bucket_of`] uses the first
/// `BUCKETS_USED`.
pub const LATENCY_BUCKETS: usize = 1024;
/// Buckets that values up to `u64::MAX` fall into.
const BUCKETS_USED: usize = 976;
/// Slowest one-way latency recorded (XLS_LATENCY_MAX_NS); longer is clamped.
const LATENCY_MAX_NS: u64 = 10_000_000_000;
/// Packet numbers per bitmap word (XLS_SEEN_BITS).
const SEEN_BITS: u64 = 32;
/// Most bitmap words (64 MiB, 2^28 packet numbers).
const SEEN_WORDS_MAX: u64 = 1 << 23;
/// Epochs are kept in 24 bits (the top bits of the highest-seen word).
const EPOCH_MASK: u32 = (1 << 24) - 1;
/// Largest trial number: the sequence number carries 24 bits of it.
const TRIAL_MAX: u32 = (1 << 24) - 1;

/// Load-time configuration (`struct xls_cfg`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Config {
    me: [u8; 32],
    seen_words: u64,
    port: u16,
    pad: [u8; 6],
}

const _: () = assert!(size_of::<Config>() == 48);

// SAFETY: repr(C), no implicit padding (pinned above), every bit pattern valid.
unsafe impl aya::Pod for Config {}

/// One CPU's counters (`struct xls_stats`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Stats {
    epoch: u32,
    pad: u32,
    counters: [u64; COUNTERS],
    latency: [u64; LATENCY_BUCKETS],
}

const _: () = assert!(size_of::<Stats>() == 8 + 8 * COUNTERS + 8 * LATENCY_BUCKETS);

// SAFETY: repr(C), no implicit padding (pinned above), every bit pattern valid.
unsafe impl aya::Pod for Stats {}

/// The XDP counting sink, attached to one interface. Dropping it detaches
/// the program.
pub struct XdpSink {
    /// The loaded program and its link; `None` only during `drop`.
    ebpf: Option<aya::Ebpf>,
    netns: String,
    state: Array<MapData, u64>,
    stats: PerCpuArray<MapData, Stats>,
    epoch: u32,
    trial: u32,
}

impl std::fmt::Debug for XdpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpSink")
            .field("netns", &self.netns)
            .field("epoch", &self.epoch)
            .field("trial", &self.trial)
            .finish_non_exhaustive()
    }
}

impl XdpSink {
    /// Loads and attaches (native mode) to `ifname` in namespace `netns`,
    /// counting overlay data packets to `me` on UDP port `port`. Duplicates
    /// are tracked for packet numbers below `capacity` (rounded up to 32,
    /// at most 2^28); higher ones count as unique, unchecked. Counting
    /// starts in trial 0.
    pub fn attach(
        netns: &str,
        ifname: &str,
        me: NodeId,
        port: u16,
        capacity: u64,
    ) -> anyhow::Result<XdpSink> {
        let seen_words = capacity.div_ceil(SEEN_BITS).clamp(1, SEEN_WORDS_MAX);
        let config = Config {
            me: *me.as_bytes(),
            seen_words,
            port,
            pad: [0; 6],
        };
        let ifname_owned = ifname.to_string();
        let mut ebpf = crate::netns::in_netns(netns, move || {
            let entries = u32::try_from(seen_words).context("bitmap size")?;
            let mut ebpf = aya::EbpfLoader::new()
                .override_global("xls_cfg", &config, true)
                .map_max_entries("xls_seen", entries)
                .load(XDPSINK_OBJECT)
                .context("loading the XDP sink object")?;
            let program: &mut Xdp = ebpf
                .program_mut("xls_sink")
                .context("xls_sink in the object")?
                .try_into()
                .context("xls_sink is XDP")?;
            program.load().context("verifier")?;
            program
                .attach(&ifname_owned, XdpMode::Driver)
                .with_context(|| format!("attaching to {ifname_owned} in native mode"))?;
            Ok(ebpf)
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("XDP sink loader panicked"))?
        .with_context(|| format!("XDP sink on {ifname} in {netns}"))?;
        let state = Array::try_from(ebpf.take_map("xls_state").context("xls_state map")?)
            .context("xls_state")?;
        let stats = PerCpuArray::try_from(ebpf.take_map("xls_stats").context("xls_stats map")?)
            .context("xls_stats")?;
        let mut sink = XdpSink {
            ebpf: Some(ebpf),
            netns: netns.to_string(),
            state,
            stats,
            epoch: 0,
            trial: 0,
        };
        sink.begin_trial(0)?;
        Ok(sink)
    }

    /// Starts counting trial `trial` (resets the counters). Packets of any
    /// other trial count as stale from now on.
    pub fn begin_trial(&mut self, trial: u32) -> anyhow::Result<()> {
        if trial > TRIAL_MAX {
            bail!("trial {trial} does not fit the 24 bits of a sequence number");
        }
        // Never 0: zeroed map entries carry epoch 0.
        let epoch = match (self.epoch + 1) & EPOCH_MASK {
            0 => 1,
            e => e,
        };
        let state = (u64::from(epoch) << 32) | u64::from(trial);
        self.state.set(0, state, 0).context("writing xls_state")?;
        self.epoch = epoch;
        self.trial = trial;
        Ok(())
    }

    /// The trial being counted.
    pub fn trial(&self) -> u32 {
        self.trial
    }

    /// Valid packets of the current trial so far (sum over CPUs).
    pub fn valid(&self) -> anyhow::Result<u64> {
        Ok(self.counters()?[COUNTER_VALID])
    }

    /// Unique packets of the current trial whose number was not checked
    /// for duplicates (beyond the bitmap's capacity, or a contended word).
    pub fn unchecked(&self) -> anyhow::Result<u64> {
        Ok(self.counters()?[COUNTER_UNCHECKED])
    }

    /// Runs the attached program once on `frame` (an Ethernet frame) with
    /// `BPF_PROG_TEST_RUN`, counting into the same maps, and returns its
    /// XDP verdict (`XDP_DROP` = 1, `XDP_PASS` = 2). For fixture tests.
    pub fn run_frame(&self, frame: &[u8]) -> anyhow::Result<u32> {
        let program: &Xdp = self
            .ebpf
            .as_ref()
            .and_then(|ebpf| ebpf.program("xls_sink"))
            .context("xls_sink in the object")?
            .try_into()
            .context("xls_sink is XDP")?;
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..TestRunOptions::default()
            })
            .context("BPF_PROG_TEST_RUN")?;
        Ok(result.return_value)
    }

    /// What the sink saw in the current trial, in the socket sink's shape.
    pub fn result(&self) -> anyhow::Result<SinkResult> {
        let (counters, buckets) = self.sum()?;
        Ok(SinkResult {
            received: counters[COUNTER_RECEIVED],
            valid: counters[COUNTER_VALID],
            unique: counters[COUNTER_UNIQUE],
            duplicates: counters[COUNTER_DUPLICATES],
            reordered: counters[COUNTER_REORDERED],
            stale: counters[COUNTER_STALE],
            malformed: counters[COUNTER_MALFORMED],
            latency: histogram(&buckets)?,
        })
    }

    /// The counters of the current epoch, summed over CPUs.
    fn counters(&self) -> anyhow::Result<[u64; COUNTERS]> {
        Ok(self.sum()?.0)
    }

    /// Counters and latency buckets of the current epoch, summed over CPUs
    /// (a CPU whose entry is of another epoch has counted nothing yet).
    fn sum(&self) -> anyhow::Result<([u64; COUNTERS], Box<[u64; LATENCY_BUCKETS]>)> {
        let per_cpu = self.stats.get(&0, 0).context("reading xls_stats")?;
        let mut counters = [0u64; COUNTERS];
        let mut buckets = Box::new([0u64; LATENCY_BUCKETS]);
        for cpu in per_cpu.iter().filter(|s| s.epoch == self.epoch) {
            for (sum, n) in counters.iter_mut().zip(cpu.counters) {
                *sum += n;
            }
            for (sum, n) in buckets.iter_mut().zip(cpu.latency) {
                *sum += n;
            }
        }
        Ok((counters, buckets))
    }
}

impl Drop for XdpSink {
    fn drop(&mut self) {
        let Some(ebpf) = self.ebpf.take() else { return };
        // Detach from inside the namespace: a bpf_link (what aya uses on
        // kernels >= 5.9) detaches anywhere, but aya's netlink fallback
        // names the interface by index, which is per namespace. If the
        // namespace is gone, `in_netns` drops the program here instead;
        // the interface, and the attachment with it, went with the
        // namespace.
        if let Ok(thread) = crate::netns::in_netns(&self.netns, move || {
            drop(ebpf);
            Ok(())
        }) {
            let _ = thread.join();
        }
    }
}

/// The histogram bucket of latency `v` ns, as the program computes it:
/// `v` itself below 16; above, with `m` the index of the most significant
/// bit, `(m - 3) * 16` plus the 4 bits after the most significant one.
pub fn bucket_of(v: u64) -> usize {
    if v < 16 {
        return v as usize;
    }
    let m = 63 - v.leading_zeros() as usize;
    (m - 3) * 16 + ((v >> (m - 4)) & 15) as usize
}

/// The values (lowest, highest, both inclusive) that fall into `bucket`;
/// `None` for a bucket no value falls into.
pub fn bucket_range(bucket: usize) -> Option<(u64, u64)> {
    if bucket < 16 {
        return Some((bucket as u64, bucket as u64));
    }
    if bucket >= BUCKETS_USED {
        return None;
    }
    let m = bucket / 16 + 3;
    let sub = (bucket % 16) as u64;
    let width = 1u64 << (m - 4);
    let low = (16 + sub) << (m - 4);
    Some((low, low + (width - 1)))
}

/// The value that stands for `bucket` in the HDR histogram: its midpoint.
pub fn bucket_value(bucket: usize) -> Option<u64> {
    bucket_range(bucket).map(|(low, high)| low + (high - low) / 2)
}

/// An HDR histogram (1 ns .. 10 s, 3 significant digits, as the socket
/// sink's) with each bucket's count recorded at its midpoint.
fn histogram(buckets: &[u64; LATENCY_BUCKETS]) -> anyhow::Result<Histogram<u64>> {
    let mut latency =
        Histogram::<u64>::new_with_bounds(1, LATENCY_MAX_NS, 3).context("histogram bounds")?;
    for (bucket, &count) in buckets.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let value = bucket_value(bucket)
            .context("a count in a bucket no value falls into")?
            .clamp(1, LATENCY_MAX_NS);
        latency
            .record_n(value, count)
            .context("recording a latency bucket")?;
    }
    Ok(latency)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_have_exact_buckets() {
        for v in 0..32 {
            assert_eq!(bucket_of(v), v as usize);
            assert_eq!(bucket_range(v as usize), Some((v, v)));
            assert_eq!(bucket_value(v as usize), Some(v));
        }
    }

    #[test]
    fn buckets_cut_each_power_of_two_in_sixteen() {
        assert_eq!(bucket_of(32), 32);
        assert_eq!(bucket_of(33), 32);
        assert_eq!(bucket_of(34), 33);
        assert_eq!(bucket_range(32), Some((32, 33)));
        assert_eq!(bucket_of(1000), bucket_of(1023));
        assert_eq!(bucket_range(bucket_of(1000)), Some((992, 1023)));
        assert_eq!(bucket_of(u64::MAX), BUCKETS_USED - 1);
        assert_eq!(bucket_range(BUCKETS_USED - 1), Some((31 << 59, u64::MAX)));
        assert_eq!(bucket_range(BUCKETS_USED), None);
        assert!(bucket_of(LATENCY_MAX_NS) < LATENCY_BUCKETS);
    }

    #[test]
    fn every_value_falls_in_its_bucket_within_a_32nd() {
        let mut values: Vec<u64> = (0..4096).collect();
        for shift in 0..64 {
            let p = 1u64 << shift;
            values.extend([p - 1, p, p + 1, p | (p >> 1), p.wrapping_mul(3) / 2]);
        }
        values.extend([999, 1_000_000, 12_345_678, LATENCY_MAX_NS, u64::MAX]);
        for v in values {
            let bucket = bucket_of(v);
            let (low, high) = bucket_range(bucket).expect("a used bucket");
            assert!(low <= v && v <= high, "{v} in {bucket}: {low}..={high}");
            let mid = bucket_value(bucket).expect("a used bucket");
            let error = mid.abs_diff(v) as f64;
            assert!(error <= v as f64 / 32.0, "{v}: midpoint {mid}");
        }
    }

    #[test]
    fn buckets_tile_the_values() {
        let mut next = 0u64;
        for bucket in 0..BUCKETS_USED {
            let (low, high) = bucket_range(bucket).expect("a used bucket");
            assert_eq!(low, next, "bucket {bucket} starts where the last ended");
            assert!(high >= low);
            assert_eq!(bucket_of(low), bucket);
            assert_eq!(bucket_of(high), bucket);
            next = high.wrapping_add(1);
        }
        assert_eq!(next, 0, "the last bucket ends at u64::MAX");
    }

    #[test]
    fn histogram_records_midpoints_with_counts() {
        let mut buckets = Box::new([0u64; LATENCY_BUCKETS]);
        buckets[5] = 2;
        buckets[bucket_of(20_000)] = 7;
        buckets[bucket_of(LATENCY_MAX_NS)] = 1;
        let h = histogram(&buckets).expect("in range");
        assert_eq!(h.len(), 10);
        assert_eq!(h.min(), 5);
        let p50 = h.value_at_quantile(0.5);
        assert!(p50.abs_diff(20_000) <= 20_000 / 32 + 20, "{p50}");
        assert!(h.max() <= LATENCY_MAX_NS + LATENCY_MAX_NS / 1000);
    }

    #[test]
    fn layouts_match_the_program() {
        assert_eq!(size_of::<Config>(), 48);
        assert_eq!(std::mem::offset_of!(Config, seen_words), 32);
        assert_eq!(std::mem::offset_of!(Config, port), 40);
        assert_eq!(std::mem::offset_of!(Stats, counters), 8);
        assert_eq!(std::mem::offset_of!(Stats, latency), 8 + 8 * COUNTERS);
    }
}
