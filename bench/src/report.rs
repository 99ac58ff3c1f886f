//! The comparison's outputs: raw JSON, a Markdown report and SVG charts,
//! all computed from one [`CompareRun`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::prelude::*;

use crate::compare::{CompareRun, FrameResult, OVERLOAD, PDR_LOSS, SystemResult, Trial};
use crate::systems::SystemKind;

const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

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
        throughput_chart(&measured, &path)?;
        charts.push(path);
        let path = dir.join("latency.svg");
        latency_chart(&measured, &path)?;
        charts.push(path);
        let path = dir.join("goodput.svg");
        goodput_chart(&measured, &path)?;
        charts.push(path);
    }
    let markdown = dir.join("report.md");
    std::fs::write(&markdown, markdown_report(run, &charts))
        .with_context(|| format!("writing {}", markdown.display()))?;
    Ok(Written {
        json,
        markdown,
        charts,
    })
}

fn chart_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart: {e:?}")
}

fn throughput_chart(systems: &[&SystemResult], path: &Path) -> anyhow::Result<()> {
    let frames: Vec<usize> = systems[0].frames.iter().map(|f| f.frame_len).collect();
    let top = systems
        .iter()
        .flat_map(|s| s.frames.iter())
        .map(|f| f.pdr_pps.max(f.peak_goodput_pps))
        .fold(1.0, f64::max)
        / 1e3
        * 1.15;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(chart_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Throughput: PDR (bar) and NDR (mark) per system and frame size",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..frames.len() as f64, 0f64..top)
        .map_err(chart_err)?;
    let labels = frames.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(frames.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 {
                labels.get(i).map_or(String::new(), |f| format!("{f} B"))
            } else {
                String::new()
            }
        })
        .y_desc("thousand packets/s")
        .draw()
        .map_err(chart_err)?;
    let width = 0.8 / systems.len() as f64;
    for (si, system) in systems.iter().enumerate() {
        let color = COLORS[si % COLORS.len()];
        let bars: Vec<Rectangle<(f64, f64)>> = system
            .frames
            .iter()
            .enumerate()
            .map(|(fi, f)| {
                let x0 = fi as f64 + 0.1 + si as f64 * width;
                Rectangle::new(
                    [(x0, 0.0), (x0 + width * 0.9, f.pdr_pps / 1e3)],
                    color.filled(),
                )
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(chart_err)?
            .label(system.system.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        let marks: Vec<Rectangle<(f64, f64)>> = system
            .frames
            .iter()
            .enumerate()
            .map(|(fi, f)| {
                let x0 = fi as f64 + 0.1 + si as f64 * width;
                let y = f.ndr_pps / 1e3;
                Rectangle::new(
                    [(x0, y), (x0 + width * 0.9, y + top * 0.006)],
                    BLACK.filled(),
                )
            })
            .collect();
        chart.draw_series(marks).map_err(chart_err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(chart_err)?;
    root.present().map_err(chart_err)?;
    Ok(())
}

fn latency_chart(systems: &[&SystemResult], path: &Path) -> anyhow::Result<()> {
    // The first frame size; x = load as % of PDR, y = latency (log).
    let series: Vec<(&SystemResult, &FrameResult)> = systems
        .iter()
        .filter_map(|s| s.frames.first().map(|f| (*s, f)))
        .filter(|(_, f)| !f.latency.is_empty())
        .collect();
    let top = series
        .iter()
        .flat_map(|(_, f)| f.latency.iter().map(|(_, t)| t.latency.p999_us))
        .fold(10.0, f64::max)
        * 2.0;
    let frame = series.first().map_or(0, |(_, f)| f.frame_len);
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(chart_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "One-way latency at {frame} B: p50 (solid), p99 (dashed), p99.9 (dotted) vs load"
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..100f64, (1f64..top).log_scale())
        .map_err(chart_err)?;
    chart
        .configure_mesh()
        .x_desc("offered load, % of the system's PDR")
        .y_desc("microseconds")
        .draw()
        .map_err(chart_err)?;
    for (si, (system, f)) in series.iter().enumerate() {
        let color = COLORS[si % COLORS.len()];
        let points = |pick: fn(&crate::compare::Latency) -> f64| -> Vec<(f64, f64)> {
            f.latency
                .iter()
                .map(|(load, t)| (load * 100.0, pick(&t.latency).max(1.0)))
                .collect()
        };
        chart
            .draw_series(LineSeries::new(points(|l| l.p50_us), color.stroke_width(2)))
            .map_err(chart_err)?
            .label(system.system.name())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 15, y)], color.stroke_width(2))
            });
        chart
            .draw_series(DashedLineSeries::new(
                points(|l| l.p99_us),
                6,
                4,
                color.stroke_width(2),
            ))
            .map_err(chart_err)?;
        chart
            .draw_series(DashedLineSeries::new(
                points(|l| l.p999_us),
                2,
                4,
                color.stroke_width(1),
            ))
            .map_err(chart_err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(chart_err)?;
    root.present().map_err(chart_err)?;
    Ok(())
}

fn goodput_chart(systems: &[&SystemResult], path: &Path) -> anyhow::Result<()> {
    let series: Vec<(&SystemResult, &FrameResult)> = systems
        .iter()
        .filter_map(|s| s.frames.first().map(|f| (*s, f)))
        .filter(|(_, f)| !f.overload.is_empty())
        .collect();
    let frame = series.first().map_or(0, |(_, f)| f.frame_len);
    let top = series
        .iter()
        .map(|(_, f)| f.peak_goodput_pps)
        .fold(1.0, f64::max)
        / 1e3
        * 1.15;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(chart_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Goodput under load at {frame} B (x: offered load in multiples of PDR)"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0.05f64..15f64).log_scale(), 0f64..top)
        .map_err(chart_err)?;
    chart
        .configure_mesh()
        .x_desc("offered / PDR (target; see report for achieved)")
        .y_desc("delivered, thousand packets/s")
        .draw()
        .map_err(chart_err)?;
    for (si, (system, f)) in series.iter().enumerate() {
        let color = COLORS[si % COLORS.len()];
        let mut points: Vec<(f64, f64)> = f
            .latency
            .iter()
            .chain(f.overload.iter())
            .map(|(x, t)| (*x, t.goodput_pps / 1e3))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(chart_err)?
            .label(system.system.name())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 15, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(chart_err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(chart_err)?;
    root.present().map_err(chart_err)?;
    Ok(())
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

/// The summary table (also printed by `compare`).
pub fn summary_table(run: &CompareRun) -> String {
    let mut md = String::new();
    md.push_str("| system | topology | frame | NDR pps | PDR pps | peak goodput pps | relay CPU ns/pkt (busy at max) | latency p50 / p99 / p99.9 us at 50% PDR | goodput at 2x / 10x PDR (% of peak) |\n");
    md.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for s in &run.systems {
        if let Some(reason) = &s.skipped {
            let _ = writeln!(
                md,
                "| {} | {} | - | skipped | | | | | {} |",
                s.system.name(),
                s.topology,
                reason.split(':').next().unwrap_or("skipped")
            );
            continue;
        }
        for f in &s.frames {
            let cpu = f
                .latency
                .iter()
                .rev()
                .find_map(|(_, t)| t.relay_cpu_ns_per_packet)
                .map_or("-".into(), |ns| format!("{ns:.0}"));
            let busy = f
                .trials
                .first()
                .and_then(|t| t.relay_cpu_busy)
                .map_or(String::new(), |b| format!(" ({:.0}%)", b * 100.0));
            let cpu = format!("{cpu}{busy}");
            let lat = f
                .latency
                .iter()
                .find(|(l, _)| (*l - 0.5).abs() < 1e-9)
                .map_or("-".into(), |(_, t)| {
                    format!(
                        "{:.0} / {:.0} / {:.0}",
                        t.latency.p50_us, t.latency.p99_us, t.latency.p999_us
                    )
                });
            let over: Vec<String> = f
                .overload
                .iter()
                .map(|(_, t)| {
                    format!(
                        "{:.0}% (offered {:.1}x)",
                        100.0 * t.goodput_pps / f.peak_goodput_pps.max(1.0),
                        t.offered_pps / f.pdr_pps.max(1.0)
                    )
                })
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                s.system.name(),
                s.topology,
                search_cells(f),
                cpu,
                lat,
                if over.is_empty() {
                    "-".into()
                } else {
                    over.join(" / ")
                },
            );
        }
    }
    md
}

/// The frame of the 64 B class (it runs at the overlay's minimum, 134 B).
fn smallest_class(s: &SystemResult) -> Option<&FrameResult> {
    s.frames
        .iter()
        .find(|f| f.frame_requested <= crate::loadgen::FRAME_MIN)
}

/// Relay CPU busy fraction in the unpaced (generator maximum) trial.
fn busy_at_max(f: &FrameResult) -> Option<f64> {
    f.trials.first().and_then(|t| t.relay_cpu_busy)
}

/// Verdict of "`a` peak goodput >= `goal` x `b` peak goodput". "met" only
/// when the offered load showed it: a baseline whose peak is the
/// generator's limit (it lost nothing when flooded) has an unknown
/// capacity, and a system the generator could not offer the needed rate to
/// is not shown either way.
fn ratio_verdict(a: &FrameResult, b_name: &str, b: &FrameResult, goal: f64) -> String {
    let ratio = a.peak_goodput_pps / b.peak_goodput_pps.max(1.0);
    if ratio >= goal {
        if b.generator_limited {
            return format!(
                "NOT SHOWN: generator-bound: {b_name} lost nothing at the generator's max ({}), so its capacity is unknown",
                kpps(b.max_offered_pps)
            );
        }
        return "met".into();
    }
    let needed = goal * b.peak_goodput_pps;
    if a.generator_limited || a.max_offered_pps < needed {
        return format!(
            "NOT SHOWN: generator-bound: the generator's max was {} offered, {} needed",
            kpps(a.max_offered_pps),
            kpps(needed)
        );
    }
    let mut v = verdict(ratio, goal);
    // Saturated relays read 80-86% busy in these VMs (the rest of the
    // relay CPU's time is interrupt and softirq work outside the relay's
    // tasks): below 70% the relay had room left.
    if let Some(busy) = busy_at_max(a).filter(|b| *b < 0.7) {
        let _ = write!(
            v,
            " (offered {} at max; relay CPU only {:.0}% busy there: the limit was on the endpoints' side)",
            kpps(a.max_offered_pps),
            busy * 100.0
        );
    } else if let Some(busy) = busy_at_max(a) {
        let _ = write!(
            v,
            " (relay CPU {:.0}% busy at the generator's max of {}: the relay was saturated)",
            busy * 100.0,
            kpps(a.max_offered_pps)
        );
    }
    v
}

fn ratio_rows(
    md: &mut String,
    run: &CompareRun,
    issue: u32,
    (a_kind, b_kind): (SystemKind, SystemKind),
    goal: f64,
    only_smallest: bool,
) {
    let (a, b) = (find(run, a_kind), find(run, b_kind));
    let (a_name, b_name) = (a_kind.name(), b_kind.name());
    let label = if goal >= 1.0 {
        format!("{a_name} peak >= {goal}x {b_name} peak")
    } else {
        format!("{a_name} peak >= {:.0}% of {b_name} peak", goal * 100.0)
    };
    let (Some(a), Some(b)) = (a, b) else {
        let _ = writeln!(
            md,
            "| {issue} | {label} | - | not measured in this run (both systems needed) | not shown |"
        );
        return;
    };
    let pairs: Vec<(&FrameResult, &FrameResult)> = if only_smallest {
        smallest_class(a)
            .zip(smallest_class(b))
            .into_iter()
            .collect()
    } else {
        a.frames
            .iter()
            .filter_map(|af| {
                b.frames
                    .iter()
                    .find(|bf| bf.frame_len == af.frame_len)
                    .map(|bf| (af, bf))
            })
            .collect()
    };
    if pairs.is_empty() {
        let _ = writeln!(
            md,
            "| {issue} | {label} | 64 B class | not measured: the run had no common frame size{} | not shown |",
            if only_smallest {
                " in the 64 B class"
            } else {
                ""
            }
        );
    }
    for (af, bf) in pairs {
        let ratio = af.peak_goodput_pps / bf.peak_goodput_pps.max(1.0);
        let _ = writeln!(
            md,
            "| {issue} | {label} | {} B | {} vs {} = {ratio:.2}x | {} |",
            af.frame_len,
            kpps(af.peak_goodput_pps),
            kpps(bf.peak_goodput_pps),
            ratio_verdict(af, b_name, bf, goal)
        );
    }
}

/// The same target per relay CPU, for when the generator cannot offer the
/// rate a throughput ratio needs: relay CPU per delivered packet in each
/// system's unpaced (generator maximum) trial, i.e. packets per second one
/// relay core would carry. `a` is measured at its own max, which for a
/// relay the generator cannot saturate includes more idle-to-busy wake-ups
/// per packet than a saturated relay pays: the reading is conservative for
/// `a`.
fn cpu_ratio_row(
    md: &mut String,
    issue: u32,
    (a_name, a): (&str, &FrameResult),
    (b_name, b): (&str, &FrameResult),
    goal: f64,
) {
    let ns = |f: &FrameResult| f.trials.first().and_then(|t| t.relay_cpu_ns_per_packet);
    let label = format!(
        "{a_name} relay CPU per packet <= 1/{goal} of {b_name}'s (capacity per relay core)"
    );
    match (ns(a), ns(b)) {
        (Some(a_ns), Some(b_ns)) if a_ns > 0.0 => {
            let ratio = b_ns / a_ns;
            let _ = writeln!(
                md,
                "| {issue} | {label} | {} B | {a_ns:.0} ns vs {b_ns:.0} ns at each one's max = {ratio:.2}x ({} vs {} packets/s per core) | {} |",
                a.frame_len,
                kpps(1e9 / a_ns),
                kpps(1e9 / b_ns),
                verdict(ratio, goal)
            );
        }
        _ => {
            let _ = writeln!(
                md,
                "| {issue} | {label} | {} B | not measured: no relay CPU figure in the unpaced trials | not shown |",
                a.frame_len
            );
        }
    }
}

/// Verdict of "goodput at 10x PDR >= 90% of peak"; NOT SHOWN when the
/// generator could not offer (nearly) 10x PDR.
fn overload_verdict(f: &FrameResult, t: &crate::compare::Trial, mult: f64) -> String {
    let ratio = t.goodput_pps / f.peak_goodput_pps.max(1.0);
    let achieved = t.offered_pps / f.pdr_pps.max(1.0);
    if achieved < mult * 0.95 {
        format!(
            "NOT SHOWN: generator-bound: it offered {achieved:.1}x PDR ({}), its max was {}, {mult:.0}x PDR is {}",
            kpps(t.offered_pps),
            kpps(f.max_offered_pps),
            kpps(mult * f.pdr_pps)
        )
    } else {
        let mut v = verdict(ratio, 0.9);
        if ratio < 0.9
            && let Some(busy) = t.relay_cpu_busy
        {
            // Why: what entered the relay beyond what it delivered was
            // received (and shed) on the relay's CPU, or the relay had room
            // and the loss was elsewhere.
            let duration = t.duration_s.max(1e-9);
            let entered = t.sent.saturating_sub(t.relay_input_drops.unwrap_or(0)) as f64 / duration;
            let excess = (entered - t.goodput_pps).max(0.0);
            if busy >= 0.7 {
                let _ = write!(
                    v,
                    " (relay CPU {:.0}% busy: {} frames/s entered the relay, {} more than it delivered; receiving and dropping each costs the CPU the relay's workers run on)",
                    busy * 100.0,
                    kpps(entered),
                    kpps(excess)
                );
            } else {
                let _ = write!(
                    v,
                    " (relay CPU only {:.0}% busy: the loss was not the relay's CPU)",
                    busy * 100.0
                );
            }
        }
        v
    }
}

/// The performance targets of issues 4 (fast path) and 5 (io_uring path),
/// checked against this run.
pub fn targets(run: &CompareRun) -> String {
    let mut md = String::new();
    let uring = find(run, SystemKind::XorlayUring);
    md.push_str(
        "| issue | target | frame | measured | verdict |\n| --- | --- | --- | --- | --- |\n",
    );
    // Issue 4: the XDP fast path, at the 64 B class.
    let fast = SystemKind::Xorlay;
    ratio_rows(&mut md, run, 4, (fast, SystemKind::LinuxForward), 3.0, true);
    if let (Some(a), Some(b)) = (find(run, fast), find(run, SystemKind::LinuxForward))
        && let (Some(af), Some(bf)) = (smallest_class(a), smallest_class(b))
    {
        cpu_ratio_row(
            &mut md,
            4,
            (fast.name(), af),
            (SystemKind::LinuxForward.name(), bf),
            3.0,
        );
    }
    ratio_rows(&mut md, run, 4, (fast, SystemKind::XdpRedirect), 0.8, true);
    scaling_row(&mut md, &run.scaling);
    match find(run, SystemKind::Xorlay) {
        Some(x) => {
            for f in &x.frames {
                match &f.flood {
                    Some(flood) => {
                        let ratio = flood.ratio();
                        let _ = writeln!(
                            md,
                            "| 4 | xorlay legitimate goodput under a {}x non-neighbor flood >= 90% of unflooded | {} B | {} of {} = {:.1}% (flood offered {}, legitimate {}) | {} |",
                            flood.flood_per_packet,
                            f.frame_len,
                            kpps(flood.flooded.goodput_pps),
                            kpps(flood.unflooded.goodput_pps),
                            ratio * 100.0,
                            kpps(
                                flood.flooded.flood_sent as f64
                                    / flood.flooded.duration_s.max(1e-9)
                            ),
                            kpps(flood.flooded.offered_pps),
                            verdict(ratio, 0.9)
                        );
                    }
                    None => {
                        let _ = writeln!(
                            md,
                            "| 4 | xorlay legitimate goodput under a 10x non-neighbor flood >= 90% of unflooded | {} B | no flood trial (needs a frame generator, --generator frames, and a PDR) | not shown |",
                            f.frame_len
                        );
                    }
                }
            }
        }
        None => md.push_str("| 4 | xorlay legitimate goodput under a 10x non-neighbor flood >= 90% of unflooded | - | xorlay not measured | not shown |\n"),
    }
    // Issue 5: the io_uring path alone.
    ratio_rows(
        &mut md,
        run,
        5,
        (SystemKind::XorlayUring, SystemKind::UdpRelay),
        1.5,
        false,
    );
    let mult = OVERLOAD[OVERLOAD.len() - 1];
    match uring {
        Some(x) => {
            for f in &x.frames {
                let Some((_, t)) = f.overload.iter().find(|(m, _)| *m == mult) else {
                    let _ = writeln!(
                        md,
                        "| 5 | xorlay-uring goodput at {mult:.0}x PDR >= 90% of peak | {} B | no overload trial (PDR 0) | not shown |",
                        f.frame_len
                    );
                    continue;
                };
                let ratio = t.goodput_pps / f.peak_goodput_pps.max(1.0);
                let achieved = t.offered_pps / f.pdr_pps.max(1.0);
                let _ = writeln!(
                    md,
                    "| 5 | xorlay-uring goodput at {mult:.0}x PDR >= 90% of peak | {} B | {} of {} = {:.0}% (offered reached {achieved:.1}x PDR) | {} |",
                    f.frame_len,
                    kpps(t.goodput_pps),
                    kpps(f.peak_goodput_pps),
                    ratio * 100.0,
                    overload_verdict(f, t, mult)
                );
            }
        }
        None => {
            let _ = writeln!(
                md,
                "| 5 | xorlay-uring goodput at {mult:.0}x PDR >= 90% of peak | - | xorlay-uring not measured | not shown |"
            );
        }
    }
    match (uring, find(run, SystemKind::Yggdrasil)) {
        (Some(x), Some(y)) => {
            for (xf, yf) in x.frames.iter().zip(y.frames.iter()) {
                let ratio = xf.peak_goodput_pps / yf.peak_goodput_pps.max(1.0);
                let _ = writeln!(
                    md,
                    "| 5 | xorlay-uring >= 10x yggdrasil relayed packet rate | {} B | {ratio:.1}x | {} |",
                    xf.frame_len,
                    ratio_verdict(xf, "yggdrasil", yf, 10.0)
                );
            }
        }
        (uring, _) => {
            let scale = uring
                .and_then(|x| x.frames.iter().map(|f| f.peak_goodput_pps).reduce(f64::min))
                .map(|peak| {
                    format!(
                        "; for scale only, not this run: yggdrasil 0.4.7 relayed about {} packets/s on this machine kind (the team's baseline measurements, docs/benchmarks.md), {:.0}x below this run's lowest xorlay-uring peak ({})",
                        kpps(YGGDRASIL_REFERENCE_PPS),
                        peak / YGGDRASIL_REFERENCE_PPS,
                        kpps(peak)
                    )
                })
                .unwrap_or_default();
            let _ = writeln!(
                md,
                "| 5 | xorlay-uring >= 10x yggdrasil relayed packet rate | - | not measured: yggdrasil was skipped (see below){scale} | not shown |"
            );
        }
    }
    md
}

/// yggdrasil 0.4.7's relayed packet rate in the team's baseline
/// measurements on this machine kind (a relay between two yggdrasil nodes
/// over veth, 64 B, about 22 us of relay CPU per packet). Printed for scale
/// when yggdrasil cannot run in the lab; never used for a verdict.
pub const YGGDRASIL_REFERENCE_PPS: f64 = 10_000.0;

/// What "adding workers adds throughput" must show: the most workers'
/// peak at least this many times one worker's (above the 10-20% run-to-run
/// noise of peak goodput).
pub const SCALING_GOAL: f64 = 1.2;

/// Issue 4's steering target: the io_uring path's peak with the most
/// workers of the scaling trials against its peak with one.
fn scaling_row(md: &mut String, points: &[crate::compare::ScalingPoint]) {
    let label = format!(
        "adding workers adds throughput: xorlay-uring peak with N workers >= {SCALING_GOAL}x with 1 ({} flows, steered)",
        crate::compare::SCALING_FLOWS
    );
    let one = points
        .iter()
        .find(|p| p.workers == 1)
        .and_then(|p| p.result.as_ref());
    let most = points
        .iter()
        .filter(|p| p.workers > 1)
        .max_by_key(|p| p.workers)
        .and_then(|p| p.result.as_ref().map(|r| (p.workers, r)));
    let (Some(one), Some((workers, many))) = (one, most) else {
        let _ = writeln!(
            md,
            "| 4 | {label} | - | not measured: needs scaling points of 1 and more workers (--workers-scaling 1,2) | not shown |"
        );
        return;
    };
    let ratio = many.peak_goodput_pps / one.peak_goodput_pps.max(1.0);
    let v = if ratio >= SCALING_GOAL {
        "met".to_string()
    } else if many.generator_limited || many.max_offered_pps < SCALING_GOAL * one.peak_goodput_pps {
        format!(
            "NOT SHOWN: generator-bound: the generator's max was {} offered, {} needed",
            kpps(many.max_offered_pps),
            kpps(SCALING_GOAL * one.peak_goodput_pps)
        )
    } else {
        verdict(ratio, SCALING_GOAL)
    };
    let _ = writeln!(
        md,
        "| 4 | {label} | {} B | {workers} workers {} vs 1 worker {} = {ratio:.2}x (PDR {} vs {}) | {v} |",
        many.frame_len,
        kpps(many.peak_goodput_pps),
        kpps(one.peak_goodput_pps),
        kpps(many.pdr_pps),
        kpps(one.pdr_pps),
    );
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

/// The worker-scaling section of the report.
fn scaling_section(run: &CompareRun) -> String {
    let mut md = String::new();
    if run.scaling.is_empty() {
        return md;
    }
    let _ = writeln!(
        md,
        "## The io_uring path with more workers (steering)

`xorlay-uring` on one relay (route cache off: every packet through the workers) with `dataplane.workers` = N; the generator cycles {} overlay source IDs, and the relay's SK_REUSEPORT program spreads the flows over the workers' sockets (docs/architecture.md, \"Steering across workers\"). PDR search only, at the first frame size. Worker k is pinned to the k-th CPU counting down from the relay CPU, so with two CPUs worker 1 shares the endpoints' CPU with the generator and the sink.\n",
        crate::compare::SCALING_FLOWS
    );
    md.push_str(
        "| workers | frame | NDR pps | PDR pps | peak goodput pps | packets per worker | pinning |
| --- | --- | --- | --- | --- | --- | --- |
",
    );
    for p in &run.scaling {
        let total: u64 = p.worker_rx.iter().sum();
        let shares = p
            .worker_rx
            .iter()
            .map(|n| format!("{:.0}%", 100.0 * *n as f64 / (total.max(1)) as f64))
            .collect::<Vec<_>>()
            .join(" / ");
        let pinning = p
            .pinning
            .as_ref()
            .map(|pin| {
                pin.pinned
                    .iter()
                    .filter(|l| l.contains("worker") || l.contains("r1 router"))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        match (&p.result, &p.error) {
            (Some(f), _) => {
                let _ = writeln!(
                    md,
                    "| {} | {} | {shares} | {pinning} |",
                    p.workers,
                    search_cells(f)
                );
            }
            (None, e) => {
                let _ = writeln!(
                    md,
                    "| {} | - | failed: {} | | | | |",
                    p.workers,
                    e.as_deref().unwrap_or("?")
                );
            }
        }
    }
    md.push('\n');
    md
}

fn verdict(ratio: f64, goal: f64) -> String {
    let short = 100.0 * (goal - ratio) / goal;
    if ratio >= goal {
        "met".into()
    } else if short < 1.0 {
        // "MISSED by 0%" would read as met.
        format!("MISSED by {short:.1}%")
    } else {
        format!("MISSED by {short:.0}%")
    }
}

fn markdown_report(run: &CompareRun, charts: &[PathBuf]) -> String {
    let mut md = String::new();
    let m = &run.machine;
    let _ = writeln!(md, "# xorlay benchmark report\n");
    let _ = writeln!(
        md,
        "Made by `{}` in {:.0} s (unix time {}).\n",
        run.command, run.wall_s, run.started_unix
    );
    let _ = writeln!(
        md,
        "Machine: {} x {} CPUs, {:.1} GiB, kernel {}, xorlay-bench {}.\n",
        m.cpu, m.cpus, m.memory_gib, m.kernel, m.bench_version
    );
    let o = &run.options;
    let _ = writeln!(
        md,
        "Method: fixed-duration trials of {:.2} s; PDR = highest offered rate with loss <= {:.1}%, NDR = zero loss, found by binary search ({} steps for PDR, {} for NDR) below the generator's unpaced maximum; latency at {:?} of PDR; overload at {:?} x PDR. Chain of {} relay(s) between the generator's and the sink's namespaces, veth links. Frame sizes count Ethernet with FCS; an overlay data packet (72-byte header + 16-byte stamp) needs at least {} B, so smaller requested sizes run at that minimum, for every system (all carry the same bytes).\n",
        o.trial.as_secs_f64(),
        PDR_LOSS * 100.0,
        o.search_steps.max(1),
        (o.search_steps / 2).max(1),
        crate::compare::LATENCY_LOADS,
        OVERLOAD,
        o.relays,
        crate::loadgen::FRAME_MIN,
    );
    let _ = writeln!(
        md,
        "Generator: `{}`{}.\n",
        o.traffic.generator.name(),
        match &run.generator_fallback {
            Some(why) => format!(" ({why})"),
            None => String::new(),
        }
    );
    let _ = writeln!(md, "## Summary\n\n{}", summary_table(run));
    let _ = writeln!(
        md,
        "## Targets (issues 4 and 5), same run\n\n{}",
        targets(run)
    );
    md.push_str(&explain(run));
    if !charts.is_empty() {
        md.push_str("\n## Charts\n\n");
        for c in charts {
            if let Some(name) = c.file_name().and_then(|n| n.to_str()) {
                let _ = writeln!(md, "![{name}]({name})\n");
            }
        }
    }
    if !run.sweep.is_empty() {
        md.push_str("## xorlay across topologies\n\n| topology | routers | frame | NDR pps | PDR pps | peak goodput pps |\n| --- | --- | --- | --- | --- | --- |\n");
        for p in &run.sweep {
            match (&p.result, &p.error) {
                (Some(f), _) => {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} |",
                        p.topology,
                        p.routers,
                        search_cells(f)
                    );
                }
                (None, e) => {
                    let _ = writeln!(
                        md,
                        "| {} | {} | - | failed: {} | | |",
                        p.topology,
                        p.routers,
                        e.as_deref().unwrap_or("?")
                    );
                }
            }
        }
        md.push('\n');
    }
    md.push_str(&scaling_section(run));
    md.push_str("## Systems, set-up and pinning\n\n");
    for s in &run.systems {
        let _ = writeln!(md, "- **{}**: {}.", s.system.name(), s.description);
        if let Some(reason) = &s.skipped {
            let _ = writeln!(md, "  - {reason}");
        }
        for n in &s.notes {
            let _ = writeln!(md, "  - {n}");
        }
        if let Some(p) = &s.pinning {
            let _ = writeln!(md, "  - pinning ({} CPUs): {}", p.cpus, p.pinned.join("; "));
        }
    }
    md.push_str("\nEvery trial's raw numbers (offered, sent, delivered, duplicates, reordering, latency percentiles, relay CPU) are in `results.json`.\n");
    md
}

/// Facts that explain the numbers, computed from the run.
fn explain(run: &CompareRun) -> String {
    let mut md = String::from("\n### What the numbers say\n\n");
    for s in &run.systems {
        let Some(f) = s.frames.first() else { continue };
        let cpu = f
            .latency
            .iter()
            .rev()
            .find_map(|(_, t)| t.relay_cpu_ns_per_packet.map(|ns| (ns, t.relay_cpu_busy)));
        if let Some((ns, busy)) = cpu {
            let _ = writeln!(
                md,
                "- {} at {} B: the relay CPU spent {:.0} ns per delivered packet at 90% of PDR (busy {:.0}%){}.",
                s.system.name(),
                f.frame_len,
                ns,
                busy.unwrap_or(0.0) * 100.0,
                if f.generator_limited {
                    "; PDR is the generator's limit, so the relay was not saturated"
                } else {
                    ""
                }
            );
        }
        // At the generator's maximum the relay is as loaded as this run
        // gets it: CPU time per delivered packet there compares systems at
        // (close to) their capacity.
        if let Some(t) = f.trials.first()
            && let Some(busy) = t.relay_cpu_busy
            && t.goodput_pps > 0.0
        {
            let _ = writeln!(
                md,
                "- {} at {} B, unpaced: {} delivered with the relay CPU {:.0}% busy: {:.0} ns of relay CPU per delivered packet.",
                s.system.name(),
                f.frame_len,
                kpps(t.goodput_pps),
                busy * 100.0,
                busy * 1e9 / t.goodput_pps
            );
        }
    }
    // Where the loss of the paced trials happened, when the generator can
    // tell: frames the first relay's receive ring refused.
    for s in &run.systems {
        let (mut lost, mut at_input) = (0u64, 0u64);
        for t in s.frames.iter().flat_map(|f| f.trials.iter()) {
            if t.target_pps == 0.0 || t.kind == "overload" || t.kind == "flood" {
                continue;
            }
            let Some(ring) = t.relay_input_drops else {
                continue;
            };
            lost += t.sent.saturating_sub(t.delivered);
            at_input += ring;
        }
        if lost > 0 {
            let _ = writeln!(
                md,
                "- {}: of {lost} packets lost in the paced trials (search and latency), {at_input} ({:.0}%) never entered the first relay: its veth receive ring (256 frames) was full when the generator's frame arrived.",
                s.system.name(),
                100.0 * at_input as f64 / lost as f64
            );
        }
    }
    for kind in [SystemKind::Xorlay, SystemKind::XorlayUring] {
        let Some(x) = find(run, kind) else { continue };
        let mut pass = 0u64;
        let mut miss = 0u64;
        let mut fast = 0u64;
        let mut drops = 0u64;
        let mut worker_rx = 0u64;
        let mut forwarded = 0u64;
        let mut shed = 0u64;
        for stats in &x.relay_stats {
            let get = |p: &str| {
                stats
                    .pointer(p)
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0)
            };
            // Disjoint counters: PASS_OVERLAY is for this node or not
            // cacheable; misses and unresolved entries are passed too.
            pass += get("/xdp/pass_overlay");
            miss += get("/xdp/pass_cache_miss") + get("/xdp/pass_unresolved");
            fast += get("/xdp/fwd_tx") + get("/xdp/fwd_redirect");
            worker_rx += get("/total/rx_packets");
            shed += get("/xdp/drop_shed");
            forwarded += get("/total/forwarded");
            if let Some(t) = stats.pointer("/xdp").and_then(|t| t.as_object()) {
                drops += t
                    .iter()
                    .filter(|(k, _)| k.starts_with("drop_"))
                    .filter_map(|(_, v)| v.as_u64())
                    .sum::<u64>();
            }
        }
        let _ = writeln!(
            md,
            "- {} relay counters over the whole run: XDP forwarded {fast} packets itself (fwd_tx + fwd_redirect), passed {} overlay packets to the stack ({pass} for the relay itself or not cacheable, {miss} cache misses or unresolved) and dropped {drops}; the io_uring workers received {worker_rx} and forwarded {forwarded}.",
            kind.name(),
            pass + miss
        );
        let pass = pass + miss;
        let lost_in_stack = pass.saturating_sub(worker_rx);
        if shed > 0 {
            let _ = writeln!(
                md,
                "  Load shedding: {shed} data packets for the workers were dropped in XDP, their worker's window of unread packets being full (or over the fallback budget) (drop_shed; docs/xdp.md, \"Load shedding\")."
            );
        }
        if lost_in_stack * 100 > pass {
            let _ = writeln!(
                md,
                "  {lost_in_stack} packets passed by XDP never reached the workers: the kernel dropped them (socket queue full, or bad checksums) after spending CPU on them (shedding off, or a worker without credits)."
            );
        } else {
            let _ = writeln!(
                md,
                "  The relays lost (almost) nothing between XDP and their workers: where trials lost packets, they were lost on the generator's or sink's side (their routers, veth rings and sockets share the endpoints' CPU)."
            );
        }
    }
    // Trials in which nothing arrived: a broken path, not a rate.
    let main = run.systems.iter().flat_map(|s| {
        s.frames.iter().map(move |f| {
            (
                format!("{} chain-{}", s.system.name(), run.options.relays),
                f,
            )
        })
    });
    let sweep = run.sweep.iter().filter_map(|p| {
        p.result
            .as_ref()
            .map(|f| (format!("xorlay {}", p.topology), f))
    });
    md.push_str(&broken_paths(main.chain(sweep)));
    md
}

/// A line per measured point with trials in which nothing arrived (a broken
/// path, not a rate), with the sessions and counters captured right after.
fn broken_paths<'a>(points: impl Iterator<Item = (String, &'a FrameResult)>) -> String {
    let mut md = String::new();
    for (what, f) in points {
        let dead: Vec<&Trial> = f
            .trials
            .iter()
            .filter(|t| t.nothing_arrived.is_some())
            .collect();
        if let Some(first) = dead.first() {
            let _ = writeln!(
                md,
                "- {what} at {} B: {} trial(s) delivered nothing (the first: {}, {:.0} packets/s offered); the path was broken, not overloaded. Sessions and counters right after: {}",
                f.frame_len,
                dead.len(),
                first.kind,
                first.offered_pps,
                first.nothing_arrived.as_deref().unwrap_or("-")
            );
        }
    }
    md
}

#[cfg(test)]
mod tests {
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
