//! The comparison's outputs: raw JSON, a Markdown report and SVG charts,
//! all computed from one [`CompareRun`].
//!
//! `charts` draws the SVG charts, `summary` the summary table, `targets`
//! checks the performance targets, `markdown` writes the report around
//! them.

mod charts;
mod markdown;
mod summary;
mod targets;

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::compare::{CompareRun, FrameResult, SystemResult};
use crate::systems::SystemKind;

pub use self::summary::summary_table;
pub use self::targets::{SCALING_GOAL, YGGDRASIL_REFERENCE_PPS, targets};

/// Files written.
#[derive(Debug)]
pub struct Written {
    /// results.json
    pub json: PathBuf,
    /// report.md
    pub markdown: PathBuf,
    /// The SVG charts.
    pub charts: Vec<PathBuf>,
}

/// Writes `run` into `dir`: results.json, report.md, *.svg.
pub fn write(run: &CompareRun, dir: &Path) -> anyhow::Result<Written> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = dir.join("results.json");
    std::fs::write(
        &json,
        serde_json::to_string_pretty(run).context("serializing results")?,
    )
    .with_context(|| format!("writing {}", json.display()))?;
    let mut charts = Vec::new();
    let measured: Vec<&SystemResult> = run
        .systems
        .iter()
        .filter(|s| s.skipped.is_none() && !s.frames.is_empty())
        .collect();
    if !measured.is_empty() {
        let path = dir.join("throughput.svg");
        charts::throughput_chart(&measured, &path)?;
        charts.push(path);
        let path = dir.join("latency.svg");
        charts::latency_chart(&measured, &path)?;
        charts.push(path);
        let path = dir.join("goodput.svg");
        charts::goodput_chart(&measured, &path)?;
        charts.push(path);
    }
    let markdown = dir.join("report.md");
    std::fs::write(&markdown, markdown::markdown_report(run, &charts))
        .with_context(|| format!("writing {}", markdown.display()))?;
    Ok(Written {
        json,
        markdown,
        charts,
    })
}

fn kpps(pps: f64) -> String {
    if pps >= 1e6 {
        format!("{:.2} M", pps / 1e6)
    } else {
        format!("{:.1} k", pps / 1e3)
    }
}

fn find(run: &CompareRun, kind: SystemKind) -> Option<&SystemResult> {
    run.systems
        .iter()
        .find(|s| s.system == kind && s.skipped.is_none() && !s.frames.is_empty())
}

/// The cells "frame | NDR | PDR | peak goodput" of a PDR search.
fn search_cells(f: &FrameResult) -> String {
    format!(
        "{} B | {} | {}{} | {}",
        f.frame_len,
        kpps(f.ndr_pps),
        kpps(f.pdr_pps),
        if f.generator_limited {
            " (generator limit)"
        } else {
            ""
        },
        kpps(f.peak_goodput_pps)
    )
}

#[cfg(test)]
mod tests {
    use super::markdown::broken_paths;
    use super::targets::{cpu_ratio_row, overload_verdict, ratio_verdict, scaling_row, verdict};
    use super::*;
    use crate::compare::{Latency, Trial};

    fn trial(offered: f64, goodput: f64, busy: f64) -> Trial {
        Trial {
            kind: "max".into(),
            target_pps: 0.0,
            offered_pps: offered,
            duration_s: 1.0,
            sent: offered as u64,
            delivered: goodput as u64,
            duplicates: 0,
            reordered: 0,
            stale: 0,
            malformed: 0,
            gen_errors: 0,
            flood_sent: 0,
            relay_input_drops: None,
            loss_ratio: 1.0 - goodput / offered,
            goodput_pps: goodput,
            relay_cpu_ns_per_packet: None,
            relay_cpu_busy: Some(busy),
            latency: Latency::default(),
            nothing_arrived: None,
        }
    }

    fn frame(max_offered: f64, peak: f64, generator_limited: bool) -> FrameResult {
        FrameResult {
            frame_requested: 64,
            frame_len: 134,
            payload_len: 16,
            max_offered_pps: max_offered,
            ndr_pps: peak,
            pdr_pps: peak,
            generator_limited,
            peak_goodput_pps: peak,
            latency: Vec::new(),
            overload: Vec::new(),
            flood: None,
            trials: vec![trial(max_offered, peak, 0.5)],
        }
    }

    #[test]
    fn trials_that_delivered_nothing_are_named_with_their_diagnosis() {
        let healthy = frame(2e6, 1e6, false);
        let mut broken = frame(2e6, 1e6, false);
        let mut dead = trial(1e5, 0.0, 0.1);
        dead.kind = "search".into();
        dead.nothing_arrived = Some("r1: 1 session peers".into());
        broken.trials.push(dead.clone());
        broken.trials.push(dead);
        let md = broken_paths(
            [
                ("xorlay chain-1".to_string(), &healthy),
                ("xorlay mesh-3".to_string(), &broken),
            ]
            .into_iter(),
        );
        assert!(!md.contains("chain-1"), "{md}");
        assert!(md.contains("xorlay mesh-3 at 134 B: 2 trial(s) delivered nothing (the first: search, 100000 packets/s offered)"), "{md}");
        assert!(md.contains("r1: 1 session peers"), "{md}");
    }

    #[test]
    fn met_only_when_the_load_showed_it() {
        // 300 k vs a baseline that lost packets at 100 k: met.
        let base = frame(200e3, 100e3, false);
        assert_eq!(
            ratio_verdict(&frame(400e3, 300e3, false), "b", &base, 3.0),
            "met"
        );
        // The baseline lost nothing at the generator's max: capacity unknown.
        let capped = frame(100e3, 100e3, true);
        let v = ratio_verdict(&frame(400e3, 300e3, false), "b", &capped, 3.0);
        assert!(v.starts_with("NOT SHOWN: generator-bound"), "{v}");
        // The generator could not offer the needed 300 k.
        let v = ratio_verdict(&frame(150e3, 150e3, true), "b", &base, 3.0);
        assert!(v.starts_with("NOT SHOWN: generator-bound"), "{v}");
        assert!(v.contains("150.0 k") && v.contains("300.0 k"), "{v}");
        // Offered enough, delivered too little: missed.
        let v = ratio_verdict(&frame(400e3, 150e3, false), "b", &base, 3.0);
        assert!(v.starts_with("MISSED by 50%"), "{v}");
    }

    #[test]
    fn scaling_is_met_missed_or_not_shown() {
        let point = |workers: usize, f: FrameResult| crate::compare::ScalingPoint {
            workers,
            flows: 64,
            result: Some(f),
            worker_rx: vec![1; workers],
            pinning: None,
            error: None,
        };
        let row = |points: &[crate::compare::ScalingPoint]| {
            let mut md = String::new();
            scaling_row(&mut md, points);
            md
        };
        let one = point(1, frame(3e6, 320e3, false));
        // 445 k vs 320 k = 1.39x: met.
        let md = row(&[one.clone(), point(2, frame(3e6, 445e3, false))]);
        assert!(md.contains("1.39x") && md.ends_with("| met |\n"), "{md}");
        // The most workers count, whatever the order.
        let md = row(&[
            point(4, frame(3e6, 700e3, false)),
            one.clone(),
            point(2, frame(3e6, 350e3, false)),
        ]);
        assert!(
            md.contains("4 workers") && md.ends_with("| met |\n"),
            "{md}"
        );
        // Offered enough, gained too little.
        let md = row(&[one.clone(), point(2, frame(3e6, 336e3, false))]);
        assert!(md.contains("MISSED by 12%"), "{md}");
        // The generator could not offer 1.2x.
        let md = row(&[one.clone(), point(2, frame(350e3, 350e3, true))]);
        assert!(md.contains("NOT SHOWN: generator-bound"), "{md}");
        // One point alone, or a failed point, shows nothing.
        assert!(row(&[one]).contains("not measured"));
        assert!(row(&[]).contains("not measured"));
    }

    #[test]
    fn a_near_miss_never_reads_as_zero() {
        assert_eq!(verdict(1.497, 1.5), "MISSED by 0.2%");
        assert_eq!(verdict(1.2, 1.5), "MISSED by 20%");
        assert_eq!(verdict(1.5, 1.5), "met");
    }

    #[test]
    fn cpu_ratio_reads_the_unpaced_trials() {
        let with_ns = |ns: f64| {
            let mut f = frame(400e3, 300e3, false);
            f.trials[0].relay_cpu_ns_per_packet = Some(ns);
            f
        };
        let mut md = String::new();
        cpu_ratio_row(
            &mut md,
            4,
            ("a", &with_ns(300.0)),
            ("b", &with_ns(960.0)),
            3.0,
        );
        assert!(
            md.contains("300 ns vs 960 ns") && md.contains("3.20x") && md.ends_with("| met |\n"),
            "{md}"
        );
        let mut md = String::new();
        cpu_ratio_row(
            &mut md,
            4,
            ("a", &with_ns(400.0)),
            ("b", &with_ns(900.0)),
            3.0,
        );
        assert!(md.contains("2.25x") && md.contains("MISSED by 25%"), "{md}");
        let mut md = String::new();
        cpu_ratio_row(
            &mut md,
            4,
            ("a", &frame(1.0, 1.0, false)),
            ("b", &with_ns(900.0)),
            3.0,
        );
        assert!(md.contains("not shown"), "{md}");
    }

    #[test]
    fn overload_not_shown_below_the_multiple() {
        let f = frame(100e3, 50e3, false);
        let v = overload_verdict(&f, &trial(100e3, 50e3, 0.5), 10.0);
        assert!(v.starts_with("NOT SHOWN") && !v.contains("met"), "{v}");
        assert_eq!(overload_verdict(&f, &trial(500e3, 48e3, 0.5), 10.0), "met");
        // Missed: by how much and why.
        let v = overload_verdict(&f, &trial(500e3, 30e3, 0.95), 10.0);
        assert!(v.starts_with("MISSED by 33%"), "{v}");
        assert!(
            v.contains("95% busy")
                && v.contains("500.0 k frames/s entered")
                && v.contains("470.0 k more"),
            "{v}"
        );
        let v = overload_verdict(&f, &trial(500e3, 30e3, 0.4), 10.0);
        assert!(v.contains("only 40% busy"), "{v}");
    }
}
