//! The traffic side of a run, the same for every system: how the
//! generator sends and the sink receives, the frame programs, trials.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};
use serde::Serialize;

use super::{Env, SystemKind};
use crate::livegen::LiveFrame;
use crate::loadgen::{self, GenReport, GenSpec, SinkResult, SinkThread};
use crate::netns::{self, ip, link_info};
use crate::xdpsink::XdpSink;

/// How the generator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum GenMode {
    /// A UDP socket, `sendmmsg` batches of 64, paced by sleeping.
    Socket,
    /// The fastest frame generator this machine allows: `live` where
    /// BPF_PROG_TEST_RUN may run in live-frames mode, `ring` elsewhere
    /// ([`GenMode::resolve`] probes).
    Frames,
    /// BPF_PROG_TEST_RUN live frames: an XDP program transmits prepared
    /// frames out of gen's interface (`livegen`), paced in the program.
    Live,
    /// An AF_PACKET transmit ring sends prepared frames out of gen's
    /// interface, up to 64 a slot as one UDP GSO super-frame the kernel
    /// segments (`ringgen`), paced by the sending thread. Needs no live
    /// frames.
    Ring,
}

impl GenMode {
    /// Does this generator send prepared Ethernet frames (several flows,
    /// floods, rates beyond a socket)?
    pub fn sends_frames(self) -> bool {
        !matches!(self, GenMode::Socket)
    }

    /// The generator to use for this mode: [`GenMode::Frames`] becomes
    /// `live` when [`crate::livegen::probe_live_frames`] succeeds and
    /// `ring` otherwise, with a line that says why; the other modes stay.
    pub fn resolve(self) -> (GenMode, Option<String>) {
        if self != GenMode::Frames {
            return (self, None);
        }
        match crate::livegen::probe_live_frames() {
            Ok(()) => (GenMode::Live, None),
            Err(e) => (
                GenMode::Ring,
                Some(format!(
                    "generator: live frames refused on this machine ({:#}); using the AF_PACKET ring generator (ring) instead",
                    e
                )),
            ),
        }
    }

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            GenMode::Socket => "socket",
            GenMode::Frames => "frames",
            GenMode::Live => "live",
            GenMode::Ring => "ring",
        }
    }
}

/// How the sink receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SinkMode {
    /// A UDP socket with `recvmmsg` (for xorlay: the sink endpoint's).
    Socket,
    /// An XDP program on the sink's interface counts and drops the data
    /// packets (`xdpsink`); control packets still reach the endpoint.
    Xdp,
}

/// The traffic side of a run: generator and sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TrafficMode {
    /// Generator.
    pub generator: GenMode,
    /// Sink.
    pub sink: SinkMode,
    /// Poll the sink's veth by timer instead of being woken per frame.
    pub sink_poll: Option<SinkPoll>,
    /// Overlay flows the live generator sends (sources cycled per packet,
    /// `LiveFrame::flows`); 1: one flow.
    pub flows: u32,
}

impl Default for TrafficMode {
    fn default() -> TrafficMode {
        TrafficMode {
            generator: GenMode::Socket,
            sink: SinkMode::Socket,
            sink_poll: None,
            flows: 1,
        }
    }
}

/// Timer-driven polling of the sink's veth (`napi_defer_hard_irqs` and
/// `gro_flush_timeout` of the sink's interface): while frames keep coming,
/// the sink's NAPI stays scheduled and polls every `timeout_ns`, so the
/// last relay's transmit does not wake the sink's NAPI thread (an IPI to
/// the other vCPU in these VMs) for every burst. A knob of the measuring
/// apparatus, recorded with the results; the relays are untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SinkPoll {
    /// Empty polls before falling back to wake-ups.
    pub defer: u32,
    /// Poll interval, nanoseconds.
    pub timeout_ns: u64,
}

impl std::str::FromStr for SinkPoll {
    type Err = String;

    fn from_str(text: &str) -> Result<SinkPoll, String> {
        let usage = || format!("\"{text}\": expected DEFER:NANOSECONDS, e.g. 100:50000");
        let (defer, timeout) = text.split_once(':').ok_or_else(usage)?;
        let defer: u32 = defer.trim().parse().map_err(|_| usage())?;
        let timeout_ns: u64 = timeout.trim().parse().map_err(|_| usage())?;
        if defer == 0 || !(1_000..=10_000_000).contains(&timeout_ns) {
            return Err(format!(
                "\"{text}\": DEFER must be at least 1 and NANOSECONDS from 1000 to 10000000 (e.g. 100:50000)"
            ));
        }
        Ok(SinkPoll { defer, timeout_ns })
    }
}

/// Underlay source of the flood frames: on gen's link (198.18.0.0/24), no
/// node's address, so never on a router's allowlist.
const FLOOD_SOURCE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 200);

impl Env {
    /// The live-frames generator's frame and the XDP sink, when asked for.
    pub(super) fn start_traffic_programs(&mut self) -> anyhow::Result<()> {
        let sink = self.lab.sink_index();
        if self.traffic.generator.sends_frames() {
            let (generator, fallback) = self.traffic.generator.resolve();
            self.traffic.generator = generator;
            self.notes.extend(fallback);
            let path = self.path.clone();
            let (_, src_mac) = link_info(&self.gen_ns, path.gen_iface)?;
            let (_, dst_mac) = link_info(
                &self.lab.nodes[path.first_relay].netns,
                path.first_relay_iface,
            )?;
            let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (self.gen_bind, self.gen_to) else {
                bail!("live frames need IPv4 generator addresses");
            };
            let (payload_len, _) = loadgen::payload_for_frame(0);
            self.live = Some((
                path.gen_iface.to_string(),
                LiveFrame {
                    src_mac,
                    dst_mac,
                    src,
                    dst,
                    overlay_src: self.src,
                    overlay_dst: self.dst,
                    payload_len,
                    flows: self.traffic.flows,
                },
            ));
            self.notes.push(if generator == GenMode::Live {
                format!(
                    "generator: BPF_PROG_TEST_RUN live frames out of gen's interface from {src} to {dst} (an XDP program rewrites each frame's headers, sequence number and timestamp; pacing by the program on the generator CPU)"
                )
            } else {
                format!(
                    "generator: an AF_PACKET transmit ring (TPACKET_V2) out of gen's interface from {src} to {dst} (one thread writes up to {} overlay packets a slot, each with its own sequence number and timestamp, as one UDP GSO super-frame that the kernel segments on the generator CPU, tx-udp-segmentation off on gen's interface; pacing by that thread, frames that are due alone go alone)",
                    crate::ringgen::SEGMENTS_MAX
                )
            });
        }
        if self.traffic.sink == SinkMode::Xdp {
            if self.kind == SystemKind::XdpRedirect {
                // The XDP_PASS program that gives the sink's veth NAPI goes:
                // the XDP sink takes its place.
                self.xdp.pop();
            }
            // So does the lab's pass-through program (start_relays).
            self.lab.remove_passthrough(sink);
            let xdp_sink = XdpSink::attach(
                &self.sink_ns,
                self.path.sink_iface,
                self.dst,
                self.sink_bind.port(),
                100_000_000,
            )?;
            self.xdp_sink = Some(std::sync::Mutex::new(xdp_sink));
            self.notes.push(
                "sink: an XDP program on the sink's interface counts (loss, duplicates, reordering, one-way latency) and drops the data packets; control packets pass to the sink endpoint".to_string(),
            );
        }
        let _ = sink;
        Ok(())
    }

    /// Starts counting trial `trial` at the sink (`capacity` bounds
    /// duplicate tracking).
    pub fn begin_trial(&self, trial: u32, capacity: u64) -> anyhow::Result<()> {
        if let Some(sink) = &self.xdp_sink {
            let mut sink = sink
                .lock()
                .map_err(|_| anyhow::anyhow!("xdp sink lock poisoned"))?;
            return sink.begin_trial(trial);
        }
        if let Some((_, sink)) = &self.endpoints {
            return sink.begin_trial(trial, capacity);
        }
        let thread = SinkThread::start(
            &self.sink_ns,
            self.sink_bind,
            self.dst,
            trial,
            capacity,
            self.pinning.endpoints_cpu,
        )?;
        let mut slot = self
            .sink_thread
            .lock()
            .map_err(|_| anyhow::anyhow!("sink lock poisoned"))?;
        *slot = Some(thread);
        Ok(())
    }

    /// Valid packets of the current trial at the sink so far.
    pub fn sink_valid(&self) -> u64 {
        if let Some(sink) = &self.xdp_sink {
            return sink.lock().ok().and_then(|s| s.valid().ok()).unwrap_or(0);
        }
        if let Some((_, sink)) = &self.endpoints {
            return sink.valid();
        }
        self.sink_thread
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(SinkThread::valid))
            .unwrap_or(0)
    }

    /// What the sink saw in the current trial.
    pub fn end_trial(&self) -> anyhow::Result<SinkResult> {
        if let Some(sink) = &self.xdp_sink {
            let sink = sink
                .lock()
                .map_err(|_| anyhow::anyhow!("xdp sink lock poisoned"))?;
            return sink.result();
        }
        if let Some((_, sink)) = &self.endpoints {
            return sink.end_trial();
        }
        let thread = self
            .sink_thread
            .lock()
            .map_err(|_| anyhow::anyhow!("sink lock poisoned"))?
            .take()
            .context("no trial was counting")?;
        thread.finish()
    }

    /// Frames the frame generator handed to gen's veth that the veth could
    /// not put into the first relay's receive ring (it was full): for live
    /// frames the `xdp_xmit_errors` of gen's interface, summed over queues;
    /// for the ring the interface's `tx_dropped` (veth counts an skb it
    /// could not place there). `None` without a frame generator or when
    /// the counters do not say.
    pub fn relay_input_drops(&self) -> Option<u64> {
        let (iface, _) = self.live.as_ref()?;
        if self.traffic.generator == GenMode::Ring {
            let out = ip(&["-n", &self.gen_ns, "-j", "-s", "link", "show", "dev", iface]).ok()?;
            let json: serde_json::Value = serde_json::from_str(&out).ok()?;
            return json.pointer("/0/stats64/tx/dropped")?.as_u64();
        }
        let out = netns::run(
            "ip",
            &["netns", "exec", &self.gen_ns, "ethtool", "-S", iface],
        )
        .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut total = None;
        for line in text.lines() {
            let Some((name, value)) = line.trim().split_once(':') else {
                continue;
            };
            if name.trim().ends_with("xdp_xmit_errors")
                && let Ok(v) = value.trim().parse::<u64>()
            {
                total = Some(total.unwrap_or(0) + v);
            }
        }
        total
    }

    /// Can the generator mix in a flood ([`Env::generate_flooded`])?
    pub fn can_flood(&self) -> bool {
        self.live.is_some()
    }

    /// Runs the generator for `spec`; blocks until it is done.
    pub fn generate(&self, spec: GenSpec, stop: Arc<AtomicBool>) -> anyhow::Result<GenReport> {
        self.generate_flooded(spec, 0, stop)
    }

    /// [`Env::generate`] with `flood` frames after each packet from an
    /// address on gen's link that is no neighbor of r1 (frame generators
    /// only).
    pub fn generate_flooded(
        &self,
        spec: GenSpec,
        flood: u32,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<GenReport> {
        let cpu = self.pinning.endpoints_cpu;
        if let Some((iface, frame)) = &self.live {
            let frame = LiveFrame {
                payload_len: spec.payload_len,
                ..*frame
            };
            let flood = (flood > 0).then(|| crate::livegen::Flood {
                per_packet: flood,
                src: std::net::SocketAddrV4::new(FLOOD_SOURCE, frame.src.port()),
            });
            return if self.traffic.generator == GenMode::Live {
                crate::livegen::generate_live_flooded(
                    &self.gen_ns,
                    iface,
                    &frame,
                    &spec,
                    flood,
                    cpu,
                    stop,
                )
            } else {
                crate::ringgen::generate_ring(&self.gen_ns, iface, &frame, &spec, flood, cpu, stop)
            };
        }
        if flood > 0 {
            bail!("a flood needs a frame generator (--generator frames, live or ring)");
        }
        if let Some((generator, _)) = &self.endpoints {
            return generator.generate(self.gen_to, spec, cpu, stop);
        }
        loadgen::generate_in(&self.gen_ns, self.gen_bind, self.gen_to, spec, cpu, stop)
    }
}

#[cfg(test)]
mod tests {
    use super::SinkPoll;

    #[test]
    fn sink_poll_parses_and_names_the_form_on_errors() {
        assert_eq!(
            "100:50000".parse::<SinkPoll>(),
            Ok(SinkPoll {
                defer: 100,
                timeout_ns: 50_000
            })
        );
        for bad in [
            "",
            "100",
            "x:50000",
            "100:",
            "0:50000",
            "100:10",
            "100:99999999",
        ] {
            let e = bad.parse::<SinkPoll>().expect_err(bad);
            assert!(e.contains("e.g. 100:50000"), "{bad}: {e}");
        }
    }
}
