//! The SVG charts: throughput, latency and goodput per frame size.

use std::path::Path;

use plotters::prelude::*;

use crate::compare::{FrameResult, SystemResult};

const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

fn chart_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart: {e:?}")
}

pub(super) fn throughput_chart(systems: &[&SystemResult], path: &Path) -> anyhow::Result<()> {
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
        chart
            .draw_series(pdr_bars(system, si, width, color))
            .map_err(chart_err)?
            .label(system.system.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        chart
            .draw_series(ndr_marks(system, si, width, top))
            .map_err(chart_err)?;
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

/// The PDR bars (kpps) of system number `si` of the throughput chart, one
/// per frame size, each `width` wide.
fn pdr_bars(
    system: &SystemResult,
    si: usize,
    width: f64,
    color: RGBColor,
) -> Vec<Rectangle<(f64, f64)>> {
    system
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
        .collect()
}

/// The NDR marks (kpps) over the bars of [`pdr_bars`], a thin black bar
/// each on a chart `top` high.
fn ndr_marks(system: &SystemResult, si: usize, width: f64, top: f64) -> Vec<Rectangle<(f64, f64)>> {
    system
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
        .collect()
}

pub(super) fn latency_chart(systems: &[&SystemResult], path: &Path) -> anyhow::Result<()> {
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

pub(super) fn goodput_chart(systems: &[&SystemResult], path: &Path) -> anyhow::Result<()> {
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
