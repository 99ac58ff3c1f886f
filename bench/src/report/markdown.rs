//! The Markdown report: the machine, the method, the results, what the
//! numbers say, and the worker-scaling section.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::{find, kpps, search_cells, summary_table, targets};
use crate::compare::{CompareRun, FrameResult, OVERLOAD, PDR_LOSS, SystemResult, Trial};
use crate::systems::SystemKind;

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

/// The whole report: the header, summary, targets, explanation, charts,
/// sweep, worker scaling and systems sections, in that order.
pub(super) fn markdown_report(run: &CompareRun, charts: &[PathBuf]) -> String {
    let mut md = header_section(run);
    let _ = writeln!(md, "## Summary\n\n{}", summary_table(run));
    let _ = writeln!(
        md,
        "## Targets (issues 4 and 5), same run\n\n{}",
        targets(run)
    );
    md.push_str(&explain(run));
    md.push_str(&charts_section(charts));
    md.push_str(&sweep_section(run));
    md.push_str(&scaling_section(run));
    md.push_str(&systems_section(run));
    md.push_str("\nEvery trial's raw numbers (offered, sent, delivered, duplicates, reordering, latency percentiles, relay CPU) are in `results.json`.\n");
    md
}

/// The title, the command, the machine, the method and the generator.
fn header_section(run: &CompareRun) -> String {
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
    md
}

/// Links to the chart images, if any.
fn charts_section(charts: &[PathBuf]) -> String {
    let mut md = String::new();
    if charts.is_empty() {
        return md;
    }
    md.push_str("\n## Charts\n\n");
    for c in charts {
        if let Some(name) = c.file_name().and_then(|n| n.to_str()) {
            let _ = writeln!(md, "![{name}]({name})\n");
        }
    }
    md
}

/// xorlay across topologies (the sweep), if it ran.
fn sweep_section(run: &CompareRun) -> String {
    let mut md = String::new();
    if run.sweep.is_empty() {
        return md;
    }
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
    md
}

/// Each system: what it is, why it was skipped, notes and pinning.
fn systems_section(run: &CompareRun) -> String {
    let mut md = String::new();
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
    md
}

/// Facts that explain the numbers, computed from the run.
fn explain(run: &CompareRun) -> String {
    let mut md = String::from("\n### What the numbers say\n\n");
    relay_cpu_lines(&mut md, run);
    input_loss_lines(&mut md, run);
    for kind in [SystemKind::Xorlay, SystemKind::XorlayUring] {
        if let Some(x) = find(run, kind) {
            relay_counter_lines(&mut md, kind, x);
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

/// The relay CPU time per delivered packet of each system's first frame
/// class: at 90% of PDR, and unpaced.
fn relay_cpu_lines(md: &mut String, run: &CompareRun) {
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
}

/// Where the loss of the paced trials happened, when the generator can
/// tell: frames the first relay's receive ring refused.
fn input_loss_lines(md: &mut String, run: &CompareRun) {
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
}

/// What an xorlay system's relay counters say over the whole run: where
/// XDP sent the packets, and whether the workers got what XDP passed.
fn relay_counter_lines(md: &mut String, kind: SystemKind, x: &SystemResult) {
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

/// A line per measured point with trials in which nothing arrived (a broken
/// path, not a rate), with the sessions and counters captured right after.
pub(super) fn broken_paths<'a>(points: impl Iterator<Item = (String, &'a FrameResult)>) -> String {
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
