//! The comparison method (RFC 2544 / FD.io CSIT style): fixed-duration
//! trials; a throughput search for PDR (at most 0.5% loss) and NDR (zero
//! loss) per system and frame size; latency percentiles at 10%, 50% and 90%
//! of PDR; overload trials at 2x and 10x PDR reporting goodput. Every trial's
//! raw numbers are kept in the results.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::loadgen::{self, GenSpec};
use crate::systems::{Env, Pinning, SystemKind, tasks_run_ns};

/// Loss ratio allowed at the partial drop rate.
pub const PDR_LOSS: f64 = 0.005;
/// A PDR search trial that fails with at most this loss is repeated once,
/// and the rate passes if the repeat does (two trials, one passing: the
/// 50% "goal exceed ratio" of MLRsearch, draft-ietf-bmwg-mlrsearch). In
/// these VMs a few packets in a thousand are lost at any rate when a
/// wake-up comes late (docs/benchmarks.md, "Loss floor"), so one unlucky
/// trial near the 0.5% line would otherwise end the search far below the
/// system's capacity. Losses above it are capacity, not chance.
pub const PDR_RETRY_LOSS: f64 = 4.0 * PDR_LOSS;
/// Offered rates as fractions of PDR for the latency trials.
pub const LATENCY_LOADS: [f64; 3] = [0.1, 0.5, 0.9];
/// Offered rates as multiples of PDR for the overload trials.
pub const OVERLOAD: [f64; 2] = [2.0, 10.0];
/// Overlay flows of the worker-scaling trials: enough for the steering hash
/// to split them about evenly over a few workers.
pub const SCALING_FLOWS: u32 = 64;

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct CompareOptions {
    /// Systems, in order.
    pub systems: Vec<SystemKind>,
    /// Requested frame sizes (bytes on the wire, FCS included).
    pub frames: Vec<usize>,
    /// Relays in the comparison chain.
    pub relays: usize,
    /// Duration of each trial.
    #[serde(serialize_with = "as_secs")]
    pub trial: Duration,
    /// Binary-search steps for PDR (NDR gets half as many, at least one).
    pub search_steps: u32,
    /// xorlay chain lengths for the topology sweep (PDR at the first frame size).
    pub sweep: Vec<usize>,
    /// Routers of the xorlay mesh in the sweep (0 = no mesh).
    pub mesh: usize,
    /// Worker counts of the worker-scaling trials (xorlay-uring, one relay,
    /// [`SCALING_FLOWS`] flows, PDR at the first frame size); empty: none.
    pub scaling: Vec<usize>,
    /// XDP mode of the xorlay routers.
    pub xdp_mode: String,
    /// Generator and sink.
    pub traffic: crate::systems::TrafficMode,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Latency summary of a trial, microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

/// The raw numbers of one trial.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    /// "max" (unpaced), "search", "search-repeat" (a PDR probe run again, see [`PDR_RETRY_LOSS`]), "latency", "overload".
    pub kind: String,
    /// Target offered rate, packets/s (0: unpaced).
    pub target_pps: f64,
    /// Achieved offered rate, packets/s.
    pub offered_pps: f64,
    /// Generator seconds.
    pub duration_s: f64,
    /// Datagrams sent.
    pub sent: u64,
    /// Distinct packets that reached the sink.
    pub delivered: u64,
    /// Copies beyond the first.
    pub duplicates: u64,
    /// Arrived after a higher sequence number.
    pub reordered: u64,
    /// Late packets of an earlier trial.
    pub stale: u64,
    /// Datagrams at the sink that were not this trial's valid packets.
    pub malformed: u64,
    /// Failed sendmmsg calls.
    pub gen_errors: u64,
    /// Non-neighbor flood frames sent along (flood trials; else 0).
    pub flood_sent: u64,
    /// Frames the first relay's veth receive ring could not take (it was
    /// full): part of the loss, counted at gen's interface (frame
    /// generators only).
    pub relay_input_drops: Option<u64>,
    /// (sent - delivered) / sent.
    pub loss_ratio: f64,
    /// Delivered packets per second of the trial.
    pub goodput_pps: f64,
    /// Time tasks ran on the relay CPU during the trial, per delivered packet (ns).
    pub relay_cpu_ns_per_packet: Option<f64>,
    /// Relay CPU busy fraction during the trial.
    pub relay_cpu_busy: Option<f64>,
    /// One-way latency.
    pub latency: Latency,
    /// When packets were sent and none arrived (xorlay systems): who held a
    /// session with whom right after, and the relays' drop counters
    /// (`Env::session_summary`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nothing_arrived: Option<String>,
}

impl Trial {
    /// Did the generator reach its target (within 3%)?
    pub fn generator_kept_up(&self) -> bool {
        self.target_pps == 0.0 || self.offered_pps >= 0.97 * self.target_pps
    }
}

/// One system at one frame size.
#[derive(Debug, Clone, Serialize)]
pub struct FrameResult {
    /// Requested frame size.
    pub frame_requested: usize,
    /// Actual frame size on the wire (at least the overlay's minimum).
    pub frame_len: usize,
    /// Overlay payload bytes after the 72-byte header.
    pub payload_len: usize,
    /// Highest offered rate the generator reached (unpaced trial).
    pub max_offered_pps: f64,
    /// Non-drop rate (zero loss), packets/s offered.
    pub ndr_pps: f64,
    /// Partial drop rate (loss at most 0.5%), packets/s offered.
    pub pdr_pps: f64,
    /// True when PDR is the generator's limit, not the system's.
    pub generator_limited: bool,
    /// Highest goodput in any trial.
    pub peak_goodput_pps: f64,
    /// Latency trials at 10%, 50%, 90% of PDR: (fraction, trial).
    pub latency: Vec<(f64, Trial)>,
    /// Overload trials: (multiple of PDR, trial).
    pub overload: Vec<(f64, Trial)>,
    /// The non-neighbor flood trials (xorlay with a frame generator).
    pub flood: Option<FloodResult>,
    /// Every trial, in order.
    pub trials: Vec<Trial>,
}

/// Legitimate goodput with and without a flood of data packets from an
/// underlay address that is no neighbor of r1, at the same legitimate rate.
#[derive(Debug, Clone, Serialize)]
pub struct FloodResult {
    /// Flood frames per legitimate packet.
    pub flood_per_packet: u32,
    /// The legitimate stream alone.
    pub unflooded: Trial,
    /// The same stream with the flood mixed in.
    pub flooded: Trial,
}

impl FloodResult {
    /// Flooded goodput / unflooded goodput.
    pub fn ratio(&self) -> f64 {
        self.flooded.goodput_pps / self.unflooded.goodput_pps.max(1.0)
    }
}

/// Flood frames per legitimate packet in the flood trial.
pub const FLOOD_PER_PACKET: u32 = 10;

/// One system.
#[derive(Debug, Clone, Serialize)]
pub struct SystemResult {
    /// Its name.
    pub system: SystemKind,
    /// What it is.
    pub description: String,
    /// Topology label.
    pub topology: String,
    /// Measured, or why not.
    pub skipped: Option<String>,
    /// Per frame size.
    pub frames: Vec<FrameResult>,
    /// Facts about the set-up.
    pub notes: Vec<String>,
    /// Pinning.
    pub pinning: Option<Pinning>,
    /// xorlay relay router counters after the run (empty for baselines).
    pub relay_stats: Vec<serde_json::Value>,
}

/// One point of the xorlay topology sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    /// "chain-N" or "mesh-N".
    pub topology: String,
    /// Routers between gen's and sink's.
    pub routers: usize,
    /// Result at the sweep's frame size (None when it failed).
    pub result: Option<FrameResult>,
    /// Why it failed.
    pub error: Option<String>,
}

/// One point of the worker-scaling trials.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingPoint {
    /// The relay's `dataplane.workers`.
    pub workers: usize,
    /// Overlay flows the generator sent.
    pub flows: u32,
    /// Result at the first frame size (None when it failed).
    pub result: Option<FrameResult>,
    /// Packets each worker took (`rx_packets` of the relay's workers, over
    /// the whole point), to show how the steering spread them.
    pub worker_rx: Vec<u64>,
    /// Where the relay's threads ran.
    pub pinning: Option<Pinning>,
    /// Why it failed.
    pub error: Option<String>,
}

/// The machine.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// CPUs available.
    pub cpus: usize,
    /// Kernel release.
    pub kernel: String,
    /// Memory, GiB.
    pub memory_gib: f64,
    /// xorlay-bench version.
    pub bench_version: String,
}

impl Machine {
    /// Reads /proc.
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or_else(|| "unknown".into(), |s| s.trim().to_string());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".into(), |s| s.trim().to_string());
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel,
            memory_gib,
            bench_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// Everything a comparison produced.
#[derive(Debug, Clone, Serialize)]
pub struct CompareRun {
    /// The command line that made it.
    pub command: String,
    /// Unix time of the start.
    pub started_unix: u64,
    /// Wall seconds.
    pub wall_s: f64,
    /// The machine.
    pub machine: Machine,
    /// The options.
    pub options: CompareOptions,
    /// Per system.
    pub systems: Vec<SystemResult>,
    /// xorlay across topologies.
    pub sweep: Vec<SweepPoint>,
    /// The io_uring path with 1, 2, ... workers.
    pub scaling: Vec<ScalingPoint>,
    /// Why the generator is not the one asked for (`frames` on a machine
    /// that refuses live frames), when it is not.
    pub generator_fallback: Option<String>,
}

/// Runs trials on one environment; numbers trials across the whole run.
#[derive(Debug)]
pub struct Runner<'a> {
    /// Trial length.
    pub trial: Duration,
    /// Progress bar.
    pub progress: &'a ProgressBar,
    /// Ctrl-C.
    pub interrupted: &'a Arc<AtomicBool>,
    next_trial: u32,
}

impl<'a> Runner<'a> {
    /// A runner.
    pub fn new(
        trial: Duration,
        progress: &'a ProgressBar,
        interrupted: &'a Arc<AtomicBool>,
    ) -> Runner<'a> {
        Runner {
            trial,
            progress,
            interrupted,
            next_trial: 1,
        }
    }

    fn check_interrupted(&self) -> anyhow::Result<()> {
        if self.interrupted.load(Ordering::Relaxed) {
            anyhow::bail!("interrupted; removing the lab");
        }
        Ok(())
    }

    /// One fixed-duration trial at `rate` (0: unpaced).
    pub fn trial(
        &mut self,
        env: &Env,
        payload_len: usize,
        rate: f64,
        kind: &str,
    ) -> anyhow::Result<Trial> {
        self.trial_flooded(env, payload_len, rate, kind, 0)
    }

    /// [`Runner::trial`] with `flood` non-neighbor frames after each packet
    /// (frame generators only).
    pub fn trial_flooded(
        &mut self,
        env: &Env,
        payload_len: usize,
        rate: f64,
        kind: &str,
        flood: u32,
    ) -> anyhow::Result<Trial> {
        self.check_interrupted()?;
        let trial = self.next_trial;
        self.next_trial += 1;
        env.begin_trial(trial, self.sink_capacity(rate))?;
        let spec = GenSpec {
            src: env.src,
            dst: env.dst,
            payload_len,
            rate_pps: rate.round() as u64,
            duration: self.trial,
            trial,
        };
        let cpu_before = tasks_run_ns(&env.relay_tasks);
        let ring_before = env.relay_input_drops();
        let started = Instant::now();
        let sent = env.generate_flooded(spec, flood, self.interrupted.clone())?;
        drain(env, sent.sent);
        let busy_wall = started.elapsed().as_secs_f64();
        let cpu_after = tasks_run_ns(&env.relay_tasks);
        let ring_after = env.relay_input_drops();
        let result = env.end_trial()?;
        let latency = Latency::of(&result.latency);
        let delivered = result.unique.min(sent.sent);
        let cpu_ns = match (cpu_before, cpu_after) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64),
            _ => None,
        };
        let record = Trial {
            kind: kind.into(),
            target_pps: rate,
            offered_pps: sent.offered_pps(),
            duration_s: sent.elapsed_s,
            sent: sent.sent,
            delivered,
            duplicates: result.duplicates,
            reordered: result.reordered,
            stale: result.stale,
            malformed: result.malformed,
            gen_errors: sent.errors,
            flood_sent: sent.flood_sent,
            relay_input_drops: match (ring_before, ring_after) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                _ => None,
            },
            loss_ratio: if sent.sent > 0 {
                (sent.sent - delivered) as f64 / sent.sent as f64
            } else {
                0.0
            },
            goodput_pps: if sent.elapsed_s > 0.0 {
                delivered as f64 / sent.elapsed_s
            } else {
                0.0
            },
            relay_cpu_ns_per_packet: cpu_ns
                .filter(|_| delivered > 0)
                .map(|ns| ns / delivered as f64),
            relay_cpu_busy: cpu_ns.map(|ns| ns / (busy_wall * 1e9)),
            latency,
            nothing_arrived: (sent.sent > 0 && delivered == 0 && env.kind.is_xorlay())
                .then(|| env.session_summary()),
        };
        self.show_progress(env, &record);
        std::thread::sleep(Duration::from_millis(30));
        Ok(record)
    }

    /// Sink capacity for a trial at `rate` (0: unpaced): the expected count
    /// with 20% to spare, or 50 Mpps for an unpaced trial.
    fn sink_capacity(&self, rate: f64) -> u64 {
        if rate > 0.0 {
            (rate * self.trial.as_secs_f64() * 1.2) as u64 + 1024
        } else {
            50_000_000u64.saturating_mul(self.trial.as_secs().max(1))
        }
    }

    /// Counts a finished trial on the progress bar and shows its numbers.
    fn show_progress(&self, env: &Env, record: &Trial) {
        self.progress.inc(1);
        self.progress.set_message(format!(
            "{} {}: {} {:.0} kpps offered, {:.3}% loss",
            env.kind.name(),
            env.topology,
            record.kind,
            record.offered_pps / 1e3,
            record.loss_ratio * 100.0
        ));
    }

    /// The full method at one frame size: max, PDR and NDR search, latency
    /// and (if `overload`) overload trials.
    pub fn frame(
        &mut self,
        env: &Env,
        frame_requested: usize,
        steps: u32,
        with_latency_and_overload: bool,
    ) -> anyhow::Result<FrameResult> {
        let (payload_len, frame_len) = loadgen::payload_for_frame(frame_requested);
        let mut trials = Vec::new();
        let max = self.trial(env, payload_len, 0.0, "max")?;
        let max_offered = max.offered_pps;
        let max_goodput = max.goodput_pps;
        let max_loss = max.loss_ratio;
        trials.push(max);

        // PDR: highest passing rate in [lo, hi].
        let (pdr, pdr_trial_loss, generator_limited) = if max_loss <= PDR_LOSS {
            (max_offered, max_loss, true)
        } else {
            let (pdr, loss) = self.search_pdr(
                env,
                payload_len,
                steps,
                max_offered,
                max_goodput,
                &mut trials,
            )?;
            (pdr, loss, false)
        };
        // NDR: zero loss, at or below PDR.
        let ndr = if pdr > 0.0 && pdr_trial_loss == 0.0 {
            pdr
        } else if pdr > 0.0 {
            self.search_ndr(env, payload_len, steps, pdr, &mut trials)?
        } else {
            0.0
        };
        let (mut latency, mut overload) = (Vec::new(), Vec::new());
        if with_latency_and_overload && pdr > 0.0 {
            latency = self.at_loads(
                env,
                payload_len,
                pdr,
                &LATENCY_LOADS,
                "latency",
                &mut trials,
            )?;
            overload = self.at_loads(env, payload_len, pdr, &OVERLOAD, "overload", &mut trials)?;
        }
        // The legitimate rate: below PDR (or, when the search found none,
        // half the unpaced goodput) and leaving room for the flood.
        let legit_base = if pdr > 0.0 { pdr } else { max_goodput * 0.5 };
        let flood = if with_latency_and_overload
            && env.kind == SystemKind::Xorlay
            && env.can_flood()
            && legit_base > 0.0
        {
            Some(self.flood_pair(env, payload_len, legit_base, max_offered, &mut trials)?)
        } else {
            None
        };
        let peak_goodput_pps = trials.iter().map(|t| t.goodput_pps).fold(0.0, f64::max);
        Ok(FrameResult {
            frame_requested,
            frame_len,
            payload_len,
            max_offered_pps: max_offered,
            ndr_pps: ndr,
            pdr_pps: pdr,
            generator_limited,
            peak_goodput_pps,
            latency,
            overload,
            flood,
            trials,
        })
    }

    /// The PDR binary search when the unpaced trial lost too much: the
    /// highest offered rate that passed (0 if none) and that trial's loss.
    /// A probe failing by little is repeated once ([`PDR_RETRY_LOSS`]).
    /// Every trial is pushed to `trials`.
    fn search_pdr(
        &mut self,
        env: &Env,
        payload_len: usize,
        steps: u32,
        max_offered: f64,
        max_goodput: f64,
        trials: &mut Vec<Trial>,
    ) -> anyhow::Result<(f64, f64)> {
        let (mut pdr, mut pdr_trial_loss) = (0.0, 0.0);
        let mut lo = 0.0;
        let mut hi = max_offered;
        // First probe: just under what got through when flooded.
        let mut probe = (max_goodput * 0.97).clamp(hi * 0.01, hi);
        for _ in 0..steps.max(1) {
            let mut t = self.trial(env, payload_len, probe, "search")?;
            if repeat_pdr_probe(t.loss_ratio) {
                trials.push(t);
                t = self.trial(env, payload_len, probe, "search-repeat")?;
            }
            let rate = t.offered_pps;
            let pass = t.loss_ratio <= PDR_LOSS;
            if pass {
                lo = probe;
                if rate > pdr {
                    pdr = rate;
                    pdr_trial_loss = t.loss_ratio;
                }
            } else {
                hi = probe;
            }
            trials.push(t);
            if hi - lo <= hi * 0.02 {
                break;
            }
            probe = next_probe(lo, hi);
        }
        Ok((pdr, pdr_trial_loss))
    }

    /// The NDR binary search below a `pdr` whose trial lost packets: the
    /// highest offered rate with no loss (0 if none). Every trial is pushed
    /// to `trials`.
    fn search_ndr(
        &mut self,
        env: &Env,
        payload_len: usize,
        steps: u32,
        pdr: f64,
        trials: &mut Vec<Trial>,
    ) -> anyhow::Result<f64> {
        let mut ndr = 0.0;
        let (mut lo, mut hi) = (0.0, pdr);
        let mut probe = pdr * 0.9;
        for _ in 0..(steps / 2).max(1) {
            let t = self.trial(env, payload_len, probe, "search")?;
            if t.loss_ratio == 0.0 && t.sent > 0 {
                lo = probe;
                ndr = f64::max(ndr, t.offered_pps);
            } else {
                hi = probe;
            }
            trials.push(t);
            probe = next_probe(lo, hi);
        }
        Ok(ndr)
    }

    /// One trial at each of `loads` times `pdr`, each with its load (the
    /// latency and the overload trials). Every trial is also pushed to
    /// `trials`.
    fn at_loads(
        &mut self,
        env: &Env,
        payload_len: usize,
        pdr: f64,
        loads: &[f64],
        kind: &str,
        trials: &mut Vec<Trial>,
    ) -> anyhow::Result<Vec<(f64, Trial)>> {
        let mut done = Vec::new();
        for &load in loads {
            let t = self.trial(env, payload_len, pdr * load, kind)?;
            done.push((load, t.clone()));
            trials.push(t);
        }
        Ok(done)
    }

    /// The flood: a legitimate stream below `legit_base` that leaves the
    /// generator room for [`FLOOD_PER_PACKET`] times as many flood frames,
    /// alone and then flooded. Both trials are also pushed to `trials`.
    fn flood_pair(
        &mut self,
        env: &Env,
        payload_len: usize,
        legit_base: f64,
        max_offered: f64,
        trials: &mut Vec<Trial>,
    ) -> anyhow::Result<FloodResult> {
        let slots = f64::from(1 + FLOOD_PER_PACKET);
        let legit = f64::min(legit_base * 0.9, 0.8 * max_offered / slots);
        let unflooded = self.trial(env, payload_len, legit, "flood-baseline")?;
        let flooded = self.trial_flooded(env, payload_len, legit, "flood", FLOOD_PER_PACKET)?;
        trials.push(unflooded.clone());
        trials.push(flooded.clone());
        Ok(FloodResult {
            flood_per_packet: FLOOD_PER_PACKET,
            unflooded,
            flooded,
        })
    }
}

/// Waits after a trial's last packet was sent until the sink has all `sent`
/// of them or nothing more arrived for 100 ms, at most 2 s.
fn drain(env: &Env, sent: u64) {
    let mut last = (env.sink_valid(), Instant::now());
    let drain_deadline = Instant::now() + Duration::from_secs(2);
    while env.sink_valid() < sent && Instant::now() < drain_deadline {
        std::thread::sleep(Duration::from_millis(5));
        let now = env.sink_valid();
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= Duration::from_millis(100) {
            break;
        }
    }
}

impl Latency {
    /// The summary of a histogram of one-way latencies in nanoseconds; all
    /// zero when it is empty.
    fn of(h: &hdrhistogram::Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        if h.is_empty() {
            Latency::default()
        } else {
            Latency {
                count: h.len(),
                min_us: us(h.min()),
                p50_us: us(h.value_at_quantile(0.5)),
                p99_us: us(h.value_at_quantile(0.99)),
                p999_us: us(h.value_at_quantile(0.999)),
                max_us: us(h.max()),
                mean_us: h.mean() / 1000.0,
            }
        }
    }
}

/// A line above the progress bar, or on stderr when the bar is hidden.
fn say(progress: &ProgressBar, line: impl AsRef<str>) {
    if progress.is_hidden() {
        eprintln!("{}", line.as_ref());
    } else {
        progress.println(line);
    }
}

/// Trials a full method run takes at most per system and frame size.
pub fn trials_per_frame(steps: u32, full: bool) -> u64 {
    // PDR steps count twice: each may be repeated once.
    let base = 1 + 2 * u64::from(steps.max(1)) + u64::from((steps / 2).max(1));
    if full {
        // + 2: the flood trials (xorlay with a frame generator).
        base + (LATENCY_LOADS.len() + OVERLOAD.len()) as u64 + 2
    } else {
        base
    }
}

/// Whether a PDR probe with `loss` gets a second trial: it failed, but by
/// no more than chance explains ([`PDR_RETRY_LOSS`]).
pub fn repeat_pdr_probe(loss: f64) -> bool {
    loss > PDR_LOSS && loss <= PDR_RETRY_LOSS
}

/// The next rate of a binary search between a passing `lo` and a failing
/// `hi`: the geometric midpoint while they are more than 2x apart (the
/// generator's maximum can be 100x a relay's capacity, and arithmetic halving
/// from there spends every step far above it), the arithmetic one after.
pub fn next_probe(lo: f64, hi: f64) -> f64 {
    if lo > 0.0 && hi > 2.0 * lo {
        (lo * hi).sqrt()
    } else {
        (lo + hi) / 2.0
    }
}

/// Runs the comparison.
pub fn run(
    options: &CompareOptions,
    command: String,
    interrupted: &Arc<AtomicBool>,
) -> anyhow::Result<CompareRun> {
    let started = Instant::now();
    // Once for the whole run: live frames, or the ring where they are
    // refused (said here and in the report).
    let (generator, generator_fallback) = options.traffic.generator.resolve();
    if let Some(line) = &generator_fallback {
        eprintln!("{line}");
    }
    let options = &CompareOptions {
        traffic: crate::systems::TrafficMode {
            generator,
            ..options.traffic
        },
        ..options.clone()
    };
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let progress = progress_bar(options)?;
    let mut runner = Runner::new(options.trial, &progress, interrupted);
    let mut systems = Vec::new();
    for &kind in &options.systems {
        systems.push(measure_system(&mut runner, &progress, options, kind)?);
    }
    let sweep_frame = options.frames.first().copied().unwrap_or(512);
    let sweep = measure_sweep(&mut runner, &progress, options, sweep_frame, interrupted)?;
    let mut scaling = Vec::new();
    for &workers in &options.scaling {
        progress.set_message(format!("setting up xorlay-uring with {workers} workers"));
        scaling.push(scaling_point(
            &mut runner,
            options,
            workers,
            sweep_frame,
            interrupted,
        )?);
    }
    progress.finish_with_message("done");
    Ok(CompareRun {
        command,
        started_unix,
        wall_s: started.elapsed().as_secs_f64(),
        machine: Machine::detect(),
        options: options.clone(),
        systems,
        sweep,
        scaling,
        generator_fallback,
    })
}

/// The progress bar of a run, sized for the most trials it may take.
fn progress_bar(options: &CompareOptions) -> anyhow::Result<ProgressBar> {
    let measured = options
        .systems
        .iter()
        .filter(|k| **k != SystemKind::Yggdrasil)
        .count() as u64;
    let sweep_points =
        (options.sweep.len() + usize::from(options.mesh > 0) + options.scaling.len()) as u64;
    let total =
        measured * options.frames.len() as u64 * trials_per_frame(options.search_steps, true)
            + sweep_points * trials_per_frame(options.search_steps, false);
    let progress = ProgressBar::new(total);
    progress.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} trials (at most) {wide_msg}",
        )
        .context("progress template")?
        .progress_chars("=> "),
    );
    Ok(progress)
}

/// A system that was not measured, and why.
fn skipped_system(kind: SystemKind, options: &CompareOptions, reason: String) -> SystemResult {
    SystemResult {
        system: kind,
        description: kind.describe().into(),
        topology: format!("chain-{}", options.relays),
        skipped: Some(reason),
        frames: Vec::new(),
        notes: Vec::new(),
        pinning: None,
        relay_stats: Vec::new(),
    }
}

/// System `kind` on the chain: every frame class, or why it was skipped.
fn measure_system(
    runner: &mut Runner<'_>,
    progress: &ProgressBar,
    options: &CompareOptions,
    kind: SystemKind,
) -> anyhow::Result<SystemResult> {
    if kind == SystemKind::Yggdrasil {
        let reason = crate::systems::yggdrasil_skip_reason();
        say(progress, &reason);
        return Ok(skipped_system(kind, options, reason));
    }
    progress.set_message(format!("setting up {}", kind.name()));
    let env = match Env::chain(kind, options.relays, 1, &options.xdp_mode, options.traffic) {
        Ok(env) => env,
        Err(e) => {
            let reason = format!("{} could not be set up: {e:#}", kind.name());
            say(progress, &reason);
            progress
                .inc(options.frames.len() as u64 * trials_per_frame(options.search_steps, true));
            return Ok(skipped_system(kind, options, reason));
        }
    };
    let mut frames = Vec::new();
    for &frame in &options.frames {
        let result = runner.frame(&env, frame, options.search_steps, true)?;
        say(
            progress,
            format!(
                "{:<14} {:>5} B: NDR {:>9.0} pps, PDR {:>9.0} pps{}, peak goodput {:>9.0} pps",
                kind.name(),
                result.frame_len,
                result.ndr_pps,
                result.pdr_pps,
                if result.generator_limited {
                    " (generator limit)"
                } else {
                    ""
                },
                result.peak_goodput_pps
            ),
        );
        frames.push(result);
    }
    Ok(SystemResult {
        system: kind,
        description: kind.describe().into(),
        topology: env.topology.clone(),
        skipped: None,
        frames,
        notes: env.notes.clone(),
        pinning: Some(env.pinning.clone()),
        relay_stats: env.relay_stats(),
    })
}

/// xorlay on the longer chains and the mesh: a PDR search at `frame` for
/// each; a point that cannot be set up or measured records the error.
fn measure_sweep(
    runner: &mut Runner<'_>,
    progress: &ProgressBar,
    options: &CompareOptions,
    frame: usize,
    interrupted: &Arc<AtomicBool>,
) -> anyhow::Result<Vec<SweepPoint>> {
    let mut sweep = Vec::new();
    let mut points: Vec<(String, usize)> = options
        .sweep
        .iter()
        .map(|n| (format!("chain-{n}"), *n))
        .collect();
    if options.mesh > 0 {
        points.push((format!("mesh-{}", options.mesh), options.mesh));
    }
    for (topology, routers) in points {
        progress.set_message(format!("setting up xorlay {topology}"));
        let env = if topology.starts_with("mesh") {
            Env::mesh(routers, &options.xdp_mode, options.traffic)
        } else {
            Env::chain(
                SystemKind::Xorlay,
                routers,
                1,
                &options.xdp_mode,
                options.traffic,
            )
        };
        let point = match env {
            Ok(env) => match runner.frame(&env, frame, options.search_steps, false) {
                Ok(result) => SweepPoint {
                    topology,
                    routers,
                    result: Some(result),
                    error: None,
                },
                Err(e) if interrupted.load(Ordering::Relaxed) => return Err(e),
                Err(e) => SweepPoint {
                    topology,
                    routers,
                    result: None,
                    error: Some(format!("{e:#}")),
                },
            },
            Err(e) => SweepPoint {
                topology,
                routers,
                result: None,
                error: Some(format!("{e:#}")),
            },
        };
        sweep.push(point);
    }
    Ok(sweep)
}

/// The io_uring path on one relay with `workers` workers and
/// [`SCALING_FLOWS`] flows: a PDR search at `frame`.
fn scaling_point(
    runner: &mut Runner<'_>,
    options: &CompareOptions,
    workers: usize,
    frame: usize,
    interrupted: &Arc<AtomicBool>,
) -> anyhow::Result<ScalingPoint> {
    let traffic = crate::systems::TrafficMode {
        flows: SCALING_FLOWS,
        ..options.traffic
    };
    let mut point = ScalingPoint {
        workers,
        flows: SCALING_FLOWS,
        result: None,
        worker_rx: Vec::new(),
        pinning: None,
        error: None,
    };
    let env = match Env::chain(
        SystemKind::XorlayUring,
        1,
        workers,
        &options.xdp_mode,
        traffic,
    ) {
        Ok(env) => env,
        Err(e) => {
            let reason = format!("xorlay-uring with {workers} workers could not be set up: {e:#}");
            say(runner.progress, &reason);
            runner
                .progress
                .inc(trials_per_frame(options.search_steps, false));
            point.error = Some(reason);
            return Ok(point);
        }
    };
    point.pinning = Some(env.pinning.clone());
    match runner.frame(&env, frame, options.search_steps, false) {
        Ok(result) => {
            let line = format!(
                "xorlay-uring, {workers} worker(s), {SCALING_FLOWS} flows, {} B: PDR {:.0} pps, peak goodput {:.0} pps",
                result.frame_len, result.pdr_pps, result.peak_goodput_pps
            );
            say(runner.progress, line);
            point.result = Some(result);
        }
        Err(e) if interrupted.load(Ordering::Relaxed) => return Err(e),
        Err(e) => point.error = Some(format!("{e:#}")),
    }
    point.worker_rx = env
        .relay_stats()
        .first()
        .and_then(|s| s["workers"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|w| w["rx_packets"].as_u64().unwrap_or(0))
        .collect();
    Ok(point)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_narrow_pdr_failures_are_repeated() {
        assert!(!repeat_pdr_probe(0.0), "passed");
        assert!(!repeat_pdr_probe(PDR_LOSS), "passed, at the line");
        assert!(repeat_pdr_probe(0.006), "0.6%: chance");
        assert!(repeat_pdr_probe(0.02), "2%: still repeated");
        assert!(!repeat_pdr_probe(0.021), "over 2%: capacity");
        assert!(!repeat_pdr_probe(0.5), "flooded");
    }

    #[test]
    fn search_probes_geometrically_across_wide_ranges() {
        // 57 k passed, 5.7 M failed: 570 k, not 2.9 M.
        assert!((next_probe(57_000.0, 5_700_000.0) - 570_000.0).abs() < 1.0);
        // Close together: arithmetic.
        assert_eq!(next_probe(100_000.0, 150_000.0), 125_000.0);
        // Nothing passed yet: halve.
        assert_eq!(next_probe(0.0, 1_000.0), 500.0);
        // From 57 k / 5.7 M against a 120 k capacity: within 20% after five
        // steps and 5% after eight (arithmetic halving stays at 57 k: every
        // one of its first six probes is above 120 k).
        let search = |steps: usize| {
            let (mut lo, mut hi) = (57_000.0, 5_700_000.0);
            for _ in 0..steps {
                let p = next_probe(lo, hi);
                if p <= 120_000.0 { lo = p } else { hi = p }
            }
            lo
        };
        assert!(search(5) > 96_000.0, "{}", search(5));
        assert!(search(8) > 114_000.0, "{}", search(8));
    }
}
