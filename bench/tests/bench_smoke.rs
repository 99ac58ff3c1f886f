//! Smoke run of the benchmark (not a benchmark, no timing assertion): a
//! minimal `compare` (xorlay and the udp-relay baseline, one router, one
//! frame size, very short trials) must run, write its JSON, Markdown and
//! charts, and report sane numbers (nothing delivered that was not sent,
//! rates positive, percentiles in order). Run twice: with the socket
//! generator and sink (xorlay's being the benchmark's own overlay
//! endpoints), and with the frame generator the machine allows (live frames
//! or the AF_PACKET ring) and the XDP sink.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use xorlay_bench::compare::{self, CompareOptions};
use xorlay_bench::report;
use xorlay_bench::systems::{GenMode, SinkMode, SystemKind, TrafficMode};

#[test]
fn compare_smoke_run_with_socket_traffic() {
    smoke(TrafficMode {
        generator: GenMode::Socket,
        sink: SinkMode::Socket,
        sink_poll: None,
        flows: 1,
    });
}

/// `--generator frames`: live frames where the machine allows them, the
/// AF_PACKET ring elsewhere.
#[test]
fn compare_smoke_run_with_the_frame_generator_and_xdp_sink() {
    smoke(TrafficMode {
        generator: GenMode::Frames,
        sink: SinkMode::Xdp,
        sink_poll: None,
        flows: 1,
    });
}

fn smoke(traffic: TrafficMode) {
    let options = CompareOptions {
        systems: vec![SystemKind::Xorlay, SystemKind::UdpRelay],
        frames: vec![512],
        relays: 1,
        trial: Duration::from_millis(150),
        search_steps: 1,
        sweep: Vec::new(),
        // Two steered workers (flows need a frame generator): the set-up,
        // the worker pinning and the report's section run.
        scaling: if traffic.generator.sends_frames() {
            vec![2]
        } else {
            Vec::new()
        },
        // The mesh (two sites, routers discovered through a seed, the
        // endpoints joining like nodes) with a frame generator only.
        mesh: if traffic.generator.sends_frames() {
            2
        } else {
            0
        },
        xdp_mode: "native".into(),
        traffic,
    };
    let run = compare::run(
        &options,
        "bench_smoke test".into(),
        &Arc::new(AtomicBool::new(false)),
    )
    .unwrap_or_else(|e| panic!("compare: {e:#}"));
    let dir = std::env::temp_dir().join(format!(
        "xorlay-bench-smoke-{}-{:?}",
        std::process::id(),
        traffic.generator
    ));
    let written = report::write(&run, &dir).unwrap_or_else(|e| panic!("report: {e:#}"));

    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&written.json).expect("results.json written"),
    )
    .expect("results.json is JSON");
    assert_eq!(json["systems"].as_array().map(Vec::len), Some(2));
    for point in &run.sweep {
        let result = point
            .result
            .as_ref()
            .unwrap_or_else(|| panic!("{}: {:?}", point.topology, point.error));
        assert!(
            result.peak_goodput_pps > 0.0,
            "{}: nothing delivered",
            point.topology
        );
    }
    assert_eq!(
        run.sweep.len(),
        usize::from(traffic.generator.sends_frames())
    );
    if traffic.generator.sends_frames() {
        let [point] = run.scaling.as_slice() else {
            panic!("one scaling point: {:?}", run.scaling);
        };
        let result = point
            .result
            .as_ref()
            .unwrap_or_else(|| panic!("scaling: {:?}", point.error));
        assert!(result.peak_goodput_pps > 0.0, "scaling: nothing delivered");
        assert_eq!(point.flows, xorlay_bench::compare::SCALING_FLOWS);
        // Both workers took packets: the flows were steered over them.
        assert_eq!(point.worker_rx.len(), 2, "{point:?}");
        assert!(
            point.worker_rx.iter().all(|n| *n > 0),
            "a worker got nothing: {:?}",
            point.worker_rx
        );
        let pinned = point.pinning.as_ref().map(|p| p.pinned.join("; "));
        if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
            let pinned = pinned.unwrap_or_default();
            assert!(
                pinned.contains("worker 0") && pinned.contains("worker 1"),
                "{pinned}"
            );
        }
    } else {
        assert!(run.scaling.is_empty());
    }
    let markdown = std::fs::read_to_string(&written.markdown).expect("report.md written");
    assert!(markdown.contains("## Summary"), "{markdown}");
    // The generator that ran is named; a fallback says why.
    let generator = run.options.traffic.generator;
    assert!(
        markdown.contains(&format!("Generator: `{}`", generator.name())),
        "{markdown}"
    );
    if traffic.generator == GenMode::Frames {
        assert!(
            matches!(generator, GenMode::Live | GenMode::Ring),
            "{generator:?}"
        );
        assert_eq!(
            run.generator_fallback.is_some(),
            generator == GenMode::Ring,
            "{:?}",
            run.generator_fallback
        );
        if let Some(why) = &run.generator_fallback {
            assert!(markdown.contains(why.as_str()), "{markdown}");
        }
    }
    assert!(markdown.contains("| xorlay |"), "{markdown}");
    assert!(markdown.contains("| udp-relay |"), "{markdown}");
    assert_eq!(written.charts.len(), 3);
    for chart in &written.charts {
        let svg = std::fs::read_to_string(chart).expect("chart written");
        assert!(svg.contains("<svg"), "{} is not SVG", chart.display());
    }

    for system in &run.systems {
        let name = system.system.name();
        assert!(system.skipped.is_none(), "{name}: {:?}", system.skipped);
        assert_eq!(system.frames.len(), 1, "{name}");
        let frame = &system.frames[0];
        assert_eq!(frame.frame_len, 512);
        assert!(frame.max_offered_pps > 0.0, "{name}: {frame:?}");
        assert!(frame.peak_goodput_pps > 0.0, "{name}: nothing delivered");
        assert!(frame.ndr_pps <= frame.pdr_pps, "{name}: NDR above PDR");
        assert!(
            frame.pdr_pps <= frame.max_offered_pps * 1.05,
            "{name}: PDR above what was offered"
        );
        assert!(!frame.trials.is_empty());
        // The flood trials run for xorlay whenever the generator can flood.
        if system.system == SystemKind::Xorlay && traffic.generator.sends_frames() {
            let flood = frame
                .flood
                .as_ref()
                .unwrap_or_else(|| panic!("no flood trial: {frame:?}"));
            // Each stream packet is followed by its flood frames; only the
            // last one's may be cut short when the trial's time runs out
            // before the stream's packet limit.
            let per = u64::from(flood.flood_per_packet);
            let full = flood.flooded.sent * per;
            assert!(
                flood.flooded.flood_sent <= full
                    && flood.flooded.flood_sent + per >= full
                    && flood.flooded.flood_sent > 0,
                "flood frames: {flood:?}"
            );
            assert_eq!(flood.unflooded.flood_sent, 0);
        }
        for t in &frame.trials {
            assert!(t.sent > 0, "{name}: {t:?}");
            assert!(
                t.delivered <= t.sent,
                "{name}: delivered more than sent: {t:?}"
            );
            assert!((0.0..=1.0).contains(&t.loss_ratio), "{name}: {t:?}");
            assert!(t.offered_pps > 0.0 && t.duration_s > 0.0, "{name}: {t:?}");
            assert_eq!(t.malformed, 0, "{name}: {t:?}");
            assert!(
                t.latency.count >= t.delivered,
                "{name}: fewer latency samples than packets: {t:?}"
            );
            if t.delivered > 0 {
                let l = &t.latency;
                assert!(
                    l.min_us <= l.p50_us
                        && l.p50_us <= l.p99_us
                        && l.p99_us <= l.p999_us
                        && l.p999_us <= l.max_us * 1.01,
                    "{name}: percentiles out of order: {l:?}"
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
