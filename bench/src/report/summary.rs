//! The summary table: one row per system and frame size.

use std::fmt::Write as _;

use super::search_cells;
use crate::compare::CompareRun;

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
