//! `xorlay-bench`: the namespace lab and the demo.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use xorlay::wire::overlay::golden;
use xorlay_bench::lab::{Lab, LabOptions, Topology};
use xorlay_bench::traffic::{self, DataFlow, Sink};
use xorlay_bench::{netns, wait_until};

#[derive(Parser)]
#[command(
    name = "xorlay-bench",
    version,
    about = "xorlay lab, traffic generator and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the lab, let the routers discover each other from one seed, send
    /// traffic across them, fail the router carrying it, print counters, clean up.
    Demo {
        /// Routers between gen and sink.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
        routers: u16,
        /// Data packets to send before and after the failover.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        packets: u64,
        /// Send rate, packets per second.
        #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        rate: u64,
        /// Payload bytes per packet (after the 72-byte overlay header).
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(16..=1400))]
        payload: u16,
        /// XDP mode for the routers: native, generic or auto.
        #[arg(long, default_value = "native")]
        xdp_mode: String,
    },
    /// Build the lab, start the routers and keep them running until Ctrl-C.
    Lab {
        /// Routers between gen and sink.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
        routers: u16,
        /// `sites` (two segments, discovery from one seed) or `chain` (point-to-point links, known peers).
        #[arg(long, default_value = "sites", value_parser = ["sites", "chain"])]
        topology: String,
    },
    /// Remove lab namespaces left behind by runs that were killed.
    Clean,
    /// Benchmark xorlay against baselines in the same run and topology:
    /// NDR/PDR search, latency, overload; writes results.json, report.md and
    /// SVG charts into a results folder.
    Compare {
        /// Systems to measure, comma-separated: xorlay (fast path on),
        /// xorlay-uring (route cache off: io_uring path alone), xdp-redirect,
        /// linux-forward, udp-relay, yggdrasil.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "xorlay,xorlay-uring,xdp-redirect,linux-forward,udp-relay,yggdrasil"
        )]
        systems: Vec<String>,
        /// Frame sizes in bytes (Ethernet with FCS), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "64,512,1400")]
        frames: Vec<usize>,
        /// Relays in the comparison chain.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=5))]
        routers: u16,
        /// Seconds per trial.
        #[arg(long, default_value_t = 1.0)]
        trial_secs: f64,
        /// Binary-search steps for PDR.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
        steps: u32,
        /// xorlay chain lengths for the topology sweep (0: none).
        #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5")]
        sweep: Vec<usize>,
        /// Routers of the xorlay mesh in the sweep (0: none).
        #[arg(long, default_value_t = 3)]
        mesh: usize,
        /// Worker counts for the worker-scaling trials: xorlay-uring on one
        /// relay with that many io_uring workers, 64 overlay flows, PDR at
        /// the first frame size (0: none).
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        workers_scaling: Vec<usize>,
        /// Overlay flows the frame generator sends in the comparison (the
        /// overlay source ID cycles over this many values; 1: one flow, as
        /// one sender to one receiver).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65536))]
        flows: u32,
        /// Results folder (default: results/<unix time>).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Smoke run: xorlay and udp-relay, 512 B frames, 0.2 s trials, two
        /// search steps, no sweep. Finishes in well under a minute.
        #[arg(long)]
        quick: bool,
        /// XDP mode of the xorlay routers.
        #[arg(long, default_value = "native")]
        xdp_mode: String,
        /// Generator: `frames` (the fastest frame generator this machine
        /// allows: `live` where BPF_PROG_TEST_RUN may run in live-frames
        /// mode, else `ring`), `live` (live frames, XDP-transmitted out of
        /// gen's interface), `ring` (an AF_PACKET transmit ring, UDP GSO
        /// super-frames segmented by the kernel) or `socket` (sendmmsg; one
        /// flow, no flood).
        #[arg(long, value_enum, default_value = "frames")]
        generator: xorlay_bench::systems::GenMode,
        /// Sink: `xdp` (an XDP program counts and drops data packets at the
        /// sink's interface) or `socket` (recvmmsg).
        #[arg(long, value_enum, default_value = "xdp")]
        sink: xorlay_bench::systems::SinkMode,
        /// Poll the sink's veth by timer, DEFER:NANOSECONDS (its
        /// napi_defer_hard_irqs and gro_flush_timeout, e.g. 100:50000), so
        /// the last relay's transmit does not wake the sink's NAPI thread
        /// on the other CPU per burst. Off by default; see
        /// docs/benchmarks.md ("Sensitivity").
        #[arg(long)]
        sink_napi_defer: Option<xorlay_bench::systems::SinkPoll>,
    },
    /// Measure candidate generators side by side (docs/benchmarks.md,
    /// "Generators without live frames"): 134-byte frames, unpaced, into an XDP sink.
    GenEval {
        /// Candidates, comma-separated (default: all).
        #[arg(long, value_enum, value_delimiter = ',')]
        candidates: Vec<xorlay_bench::geneval::Candidate>,
        /// Seconds per run.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Runs per candidate (the table shows the median).
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// A plain recvmmsg/sendmmsg UDP relay (the udp-relay baseline), in the
    /// current network namespace, until Ctrl-C.
    Relay {
        /// Where to listen.
        #[arg(long)]
        listen: SocketAddr,
        /// Where to send every datagram.
        #[arg(long)]
        to: SocketAddr,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, interrupted.clone()) {
            eprintln!("xorlay-bench: cannot install signal handler: {e}");
            return ExitCode::FAILURE;
        }
    }
    match run(Cli::parse().command, &interrupted) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xorlay-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one subcommand; `interrupted` is set by SIGINT or SIGTERM.
fn run(command: Cmd, interrupted: &Arc<AtomicBool>) -> anyhow::Result<()> {
    match command {
        Cmd::Demo {
            routers,
            packets,
            rate,
            payload,
            xdp_mode,
        } => demo(
            usize::from(routers),
            packets,
            rate,
            usize::from(payload),
            xdp_mode,
            interrupted,
        ),
        Cmd::Lab { routers, topology } => {
            let topology = if topology == "chain" {
                Topology::Chain
            } else {
                Topology::Sites
            };
            lab(usize::from(routers), topology, interrupted)
        }
        Cmd::Compare {
            systems,
            frames,
            routers,
            trial_secs,
            steps,
            sweep,
            mesh,
            workers_scaling,
            flows,
            out,
            quick,
            xdp_mode,
            generator,
            sink,
            sink_napi_defer,
        } => compare(
            CompareArgs {
                systems,
                frames,
                routers: usize::from(routers),
                trial_secs,
                steps,
                sweep,
                mesh,
                scaling: workers_scaling,
                out,
                quick,
                xdp_mode,
                traffic: xorlay_bench::systems::TrafficMode {
                    generator,
                    sink,
                    sink_poll: sink_napi_defer,
                    flows,
                },
            },
            interrupted,
        ),
        Cmd::GenEval {
            candidates,
            seconds,
            runs,
        } => xorlay_bench::geneval::gen_eval(candidates, seconds, runs, interrupted),
        Cmd::Relay { listen, to } => relay(listen, to, interrupted),
        Cmd::Clean => {
            let removed = xorlay_bench::lab::clean_stale();
            println!("removed {} stale namespace(s)", removed.len());
            Ok(())
        }
    }
}

fn start_lab(options: LabOptions) -> anyhow::Result<Lab> {
    let mut lab = Lab::new(options)?;
    println!(
        "lab: {:?} topology, one network namespace per router, addresses in 198.18.0.0/15",
        lab.options.topology
    );
    for node in &lab.nodes {
        let addrs: Vec<String> = node
            .ifaces
            .iter()
            .map(|f| format!("{}={}", f.name, f.addr))
            .collect();
        println!(
            "  {:<5} {}  ns {}  {}",
            node.role,
            node.id(),
            node.netns,
            addrs.join(" ")
        );
    }
    if lab.options.topology == Topology::Sites {
        println!(
            "gen is on site A only, sink on site B only, r1..rN on both; every router's only config is one seed: r1"
        );
    }
    lab.start_routers()?;
    println!("routers up; XDP attachment per interface (ip -n <ns> link):");
    for (i, node) in lab.nodes.iter().enumerate() {
        let links = lab.links(i)?;
        let modes: Vec<String> = node
            .ifaces
            .iter()
            .map(|f| format!("{}: {}", f.name, xdp_mode_of(&links, &f.name)))
            .collect();
        println!("  {:<5} {}", node.role, modes.join(", "));
    }
    let started = Instant::now();
    lab.wait_converged(Duration::from_secs(20))?;
    println!(
        "discovery converged in {:.2} s; next hops per router:",
        started.elapsed().as_secs_f64()
    );
    for (i, node) in lab.nodes.iter().enumerate() {
        let neighbors = lab.neighbors(i)?;
        let roles: Vec<&str> = lab
            .nodes
            .iter()
            .filter(|n| neighbors.contains(&n.id()))
            .map(|n| n.role.as_str())
            .collect();
        println!("  {:<5} -> {}", node.role, roles.join(" "));
    }
    Ok(lab)
}

/// "xdp (native)", "xdpgeneric", or "none" for `dev` in `ip -d link` output.
fn xdp_mode_of(links: &str, dev: &str) -> &'static str {
    let line = links.lines().find(|l| {
        l.split(": ")
            .nth(1)
            .is_some_and(|name| name.split('@').next() == Some(dev))
    });
    match line {
        Some(l) if l.contains(" xdpgeneric") => "xdpgeneric",
        Some(l) if l.contains(" xdp ") => "xdp (native)",
        _ => "none",
    }
}

/// Sends `flow` from gen's local application and waits for the sink to see it.
fn run_traffic(
    lab: &Lab,
    flow: DataFlow,
    interrupted: &Arc<AtomicBool>,
) -> anyhow::Result<(traffic::SendReport, traffic::SinkReport)> {
    let sink = Sink::start(
        &lab.sink().netns,
        Lab::app_addr(),
        lab.sink().id(),
        flow.count,
    )?;
    let stop = interrupted.clone();
    let sent = netns::in_netns(&lab.generator().netns, move || {
        let socket = std::net::UdpSocket::bind(Lab::app_addr()).context("gen app bind")?;
        Ok(traffic::send_data(&socket, &flow, &stop))
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("generator panicked"))??;
    wait_until(Duration::from_secs(5), || {
        sink.valid() >= sent.sent || interrupted.load(Ordering::Relaxed)
    });
    let report = sink.finish()?;
    if interrupted.load(Ordering::Relaxed) {
        bail!("interrupted; the lab is being removed");
    }
    Ok((sent, report))
}

fn print_traffic(sent: &traffic::SendReport, report: &traffic::SinkReport) {
    println!(
        "  sent {} in {:.2} s; delivered {} ({:.2}%), duplicates {}, reordered {}; hop limit on arrival {:?}",
        sent.sent,
        sent.elapsed.as_secs_f64(),
        report.valid,
        100.0 * report.valid as f64 / sent.sent.max(1) as f64,
        report.duplicates,
        report.reordered,
        report.hop_limits,
    );
    println!(
        "  one-way latency app -> app: min {:.1} us, mean {:.1} us, max {:.1} us",
        report.latency_us_min, report.latency_us_mean, report.latency_us_max
    );
}

/// The router (index) that forwarded the most between two stats snapshots.
fn busiest_middle(lab: &Lab, before: &[u64]) -> Option<(usize, u64)> {
    (1..lab.sink_index())
        .map(|i| {
            (
                i,
                lab.stats(i)
                    .map(|s| forwarded_by(&s))
                    .unwrap_or(0)
                    .saturating_sub(before[i]),
            )
        })
        .max_by_key(|(_, n)| *n)
        .filter(|(_, n)| *n > 0)
}

fn forwarded_all(lab: &Lab) -> Vec<u64> {
    (0..lab.nodes.len())
        .map(|i| lab.stats(i).map(|s| forwarded_by(&s)).unwrap_or(0))
        .collect()
}

fn demo(
    routers: usize,
    packets: u64,
    rate: u64,
    payload: usize,
    xdp_mode: String,
    interrupted: &Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut lab = start_lab(LabOptions {
        topology: Topology::Sites,
        routers,
        xdp_mode,
        ..LabOptions::default()
    })?;
    let flow = DataFlow {
        src: lab.generator().id(),
        dst: lab.sink().id(),
        to: Lab::router_local_addr(),
        count: packets,
        payload_len: payload,
        rate_pps: rate,
    };

    println!(
        "
[1] {packets} data packets of {} bytes from gen's application to sink's node ID at {rate} pps",
        payload + 72
    );
    let before = forwarded_all(&lab);
    let (sent, report) = run_traffic(&lab, flow, interrupted)?;
    print_traffic(&sent, &report);
    let lost = sent.sent - report.valid.min(sent.sent);
    let busiest = busiest_middle(&lab, &before);

    let mut killed = None;
    if let Some((victim, carried)) = busiest.filter(|_| routers > 1) {
        failover(&mut lab, flow, victim, carried, interrupted)?;
        killed = Some(victim);
    }

    // A live middle router (the failover killed one of them, whichever the
    // random IDs made carry the traffic).
    let target = (1..lab.sink_index())
        .find(|i| Some(*i) != killed)
        .context("no live middle router")?;
    malformed_phase(&lab, target)?;
    print_counters(&lab);
    stop_lab(lab);
    if lost > 0 {
        bail!(
            "{lost} of {} packets did not arrive at the sink before the failover",
            sent.sent
        );
    }
    Ok(())
}

/// Phase 3 of the demo: malformed overlay packets from gen's namespace to
/// middle router `r`, and how many its XDP dropped and its workers
/// received.
fn malformed_phase(lab: &Lab, r: usize) -> anyhow::Result<()> {
    let malformed: Vec<Vec<u8>> = golden::malformed()
        .into_iter()
        .map(|(_, bytes, _)| bytes)
        .collect();
    let repeat = 100;
    let kinds = malformed.len() as u64;
    let role = &lab.nodes[r].role;
    let target = lab.nodes[r]
        .addr_on(0)
        .context("middle routers are on site A")?;
    println!(
        "
[3] {} malformed overlay packets from gen's namespace to {role} ({kinds} kinds x {repeat})",
        kinds * repeat as u64
    );
    let before = lab.stats(r)?;
    let bind = SocketAddr::from((lab.generator().ifaces[0].addr, 0));
    traffic::send_raw_in(
        &lab.generator().netns,
        bind,
        target,
        malformed,
        repeat as u64,
    )?;
    let expected_drops = xdp_dropped(&before) + kinds * repeat as u64;
    wait_until(Duration::from_secs(5), || {
        lab.stats(r)
            .is_ok_and(|s| xdp_dropped(&s) >= expected_drops)
    });
    let after = lab.stats(r)?;
    println!(
        "  {role} XDP dropped {} of them; {role}'s workers received {} of them",
        xdp_dropped(&after) - xdp_dropped(&before),
        data_rx(&after) - data_rx(&before),
    );
    Ok(())
}

/// The demo's closing table: each router's XDP and worker counters.
fn print_counters(lab: &Lab) {
    println!(
        "
per-router counters:"
    );
    println!(
        "  (xdp_fwd: forwarded by the XDP route cache; to_user: passed up to the workers; uring_fwd: forwarded by the io_uring workers)"
    );
    println!(
        "  {:<5} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10} {:>8} {:>9}",
        "",
        "xdp_fwd",
        "xdp_drop",
        "to_user",
        "worker_rx",
        "uring_fwd",
        "delivered",
        "app_rx",
        "sessions"
    );
    for (i, node) in lab.nodes.iter().enumerate() {
        let Ok(s) = lab.stats(i) else {
            println!("  {:<5} (stopped)", node.role);
            continue;
        };
        let to_user = counter(&s, "/xdp/pass_overlay")
            + counter(&s, "/xdp/pass_cache_miss")
            + counter(&s, "/xdp/pass_unresolved");
        println!(
            "  {:<5} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10} {:>8} {:>9}",
            node.role,
            counter(&s, "/xdp/fwd_tx") + counter(&s, "/xdp/fwd_redirect"),
            xdp_dropped(&s),
            to_user,
            counter(&s, "/total/rx_packets"),
            counter(&s, "/total/forwarded"),
            counter(&s, "/total/delivered"),
            counter(&s, "/total/app_rx"),
            counter(&s, "/session_peers"),
        );
    }
}

/// Stops the routers (reporting any that did not exit cleanly) and removes
/// the lab.
fn stop_lab(mut lab: Lab) {
    for (i, status) in lab.stop_routers() {
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => println!("{} exited with {s}", lab.nodes[i].role),
            Err(e) => println!("{}: {e}", lab.nodes[i].role),
        }
    }
    drop(lab);
    println!(
        "
routers stopped, XDP detached, namespaces removed."
    );
}

/// Phase 2 of the demo: steady traffic for three seconds; half a second in,
/// the router carrying it is killed; the rest of the run shows the loss
/// window (until its neighbors declare it dead) and the new path.
fn failover(
    lab: &mut Lab,
    flow: DataFlow,
    victim: usize,
    carried: u64,
    interrupted: &Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let count = flow.rate_pps.saturating_mul(3);
    let flow = DataFlow { count, ..flow };
    println!(
        "\n[2] {} carried {carried} of them. Steady traffic again for 3 s ({count} packets); {} is killed (SIGKILL) 0.5 s in",
        lab.nodes[victim].role, lab.nodes[victim].role
    );
    let sink = Sink::start(&lab.sink().netns, Lab::app_addr(), lab.sink().id(), count)?;
    let stop = interrupted.clone();
    let sender = netns::in_netns(&lab.generator().netns, move || {
        let socket = std::net::UdpSocket::bind(Lab::app_addr()).context("gen app bind")?;
        Ok(traffic::send_data(&socket, &flow, &stop))
    })?;
    let half_second = flow.rate_pps / 2;
    wait_until(Duration::from_secs(5), || {
        sink.valid() >= half_second || interrupted.load(Ordering::Relaxed)
    });
    let before = forwarded_all(lab);
    let at_kill = sink.valid();
    lab.kill_node(victim)?;
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("generator panicked"))??;
    wait_until(Duration::from_secs(5), || {
        sink.valid() >= sent.sent || interrupted.load(Ordering::Relaxed)
    });
    let report = sink.finish()?;
    if interrupted.load(Ordering::Relaxed) {
        bail!("interrupted; the lab is being removed");
    }
    let lost = sent.sent.saturating_sub(report.valid);
    println!(
        "  sent {}, delivered {} ({} before the kill); lost {lost}, about {:.0} ms of traffic, while {}'s neighbors waited out its 1 s dead-peer timeout",
        sent.sent,
        report.valid,
        at_kill,
        lost as f64 * 1000.0 / flow.rate_pps.max(1) as f64,
        lab.nodes[victim].role,
    );
    if let Some((now_via, n)) = busiest_middle(lab, &before) {
        println!(
            "  traffic now crosses {} ({n} packets since the kill)",
            lab.nodes[now_via].role
        );
    }
    Ok(())
}

/// Datagrams the workers took on the data path (control packets excluded).
fn data_rx(stats: &serde_json::Value) -> u64 {
    counter(stats, "/total/rx_packets").saturating_sub(counter(stats, "/total/control_rx"))
}

/// Packets a router forwarded: by its workers and by the XDP fast path.
fn forwarded_by(stats: &serde_json::Value) -> u64 {
    counter(stats, "/total/forwarded")
        + counter(stats, "/xdp/fwd_tx")
        + counter(stats, "/xdp/fwd_redirect")
}

fn counter(stats: &serde_json::Value, pointer: &str) -> u64 {
    stats
        .pointer(pointer)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

fn xdp_dropped(stats: &serde_json::Value) -> u64 {
    stats
        .pointer("/xdp")
        .and_then(|t| t.as_object())
        .map(|t| {
            t.iter()
                .filter(|(k, _)| k.starts_with("drop_"))
                .filter_map(|(_, v)| v.as_u64())
                .sum()
        })
        .unwrap_or(0)
}

fn lab(routers: usize, topology: Topology, interrupted: &Arc<AtomicBool>) -> anyhow::Result<()> {
    let lab = start_lab(LabOptions {
        topology,
        routers,
        ..LabOptions::default()
    })?;
    println!(
        "\nlab running; configs, keys, admin sockets and logs in {}",
        lab.dir.display()
    );
    println!(
        "e.g. `xorlay stats --socket {}`",
        lab.admin_socket(1).display()
    );
    println!(
        "applications: inside {} send overlay packets to {} from {}; inside {} they arrive at {}. Ctrl-C removes everything.",
        lab.generator().netns,
        Lab::router_local_addr(),
        Lab::app_addr(),
        lab.sink().netns,
        Lab::app_addr(),
    );
    while !interrupted.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("stopping routers and removing the lab ...");
    Ok(())
}

struct CompareArgs {
    systems: Vec<String>,
    frames: Vec<usize>,
    routers: usize,
    trial_secs: f64,
    steps: u32,
    sweep: Vec<usize>,
    mesh: usize,
    scaling: Vec<usize>,
    out: Option<std::path::PathBuf>,
    quick: bool,
    xdp_mode: String,
    traffic: xorlay_bench::systems::TrafficMode,
}

fn compare(args: CompareArgs, interrupted: &Arc<AtomicBool>) -> anyhow::Result<()> {
    use xorlay_bench::compare::{self, CompareOptions};
    use xorlay_bench::systems::SystemKind;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let mut systems = Vec::new();
    for name in &args.systems {
        let kind = SystemKind::parse(name.trim()).with_context(|| {
            format!("unknown system {name:?}; known: xorlay, xorlay-uring, xdp-redirect, linux-forward, udp-relay, yggdrasil")
        })?;
        if !systems.contains(&kind) {
            systems.push(kind);
        }
    }
    if !(0.05..=60.0).contains(&args.trial_secs) {
        bail!("--trial-secs must be between 0.05 and 60");
    }
    if args.frames.iter().any(|f| !(64..=1500).contains(f)) {
        bail!("frame sizes must be between 64 and 1500 bytes");
    }
    let sweep: Vec<usize> = args.sweep.into_iter().filter(|n| *n != 0).collect();
    if sweep.iter().any(|n| !(1..=5).contains(n)) || args.mesh > 5 {
        bail!("sweep chains and the mesh have 1 to 5 routers");
    }
    let scaling: Vec<usize> = args.scaling.into_iter().filter(|n| *n != 0).collect();
    if scaling.iter().any(|n| *n > 64) {
        bail!("--workers-scaling takes 1 to 64 workers per point (the router's limit)");
    }
    if (!scaling.is_empty() || args.traffic.flows > 1) && !args.traffic.generator.sends_frames() {
        bail!(
            "several overlay flows (--flows, --workers-scaling) need a frame generator: add --generator frames, or --workers-scaling 0 --flows 1"
        );
    }

    let mut options = CompareOptions {
        systems,
        frames: args.frames,
        relays: args.routers,
        trial: Duration::from_secs_f64(args.trial_secs),
        search_steps: args.steps,
        sweep,
        mesh: args.mesh,
        scaling,
        xdp_mode: args.xdp_mode,
        traffic: args.traffic,
    };
    if args.quick {
        options.systems = vec![SystemKind::Xorlay, SystemKind::UdpRelay];
        options.frames = vec![512];
        options.trial = Duration::from_millis(200);
        options.search_steps = 2;
        options.sweep = Vec::new();
        options.mesh = 0;
        options.scaling = Vec::new();
    }
    let out = args.out.unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        std::path::PathBuf::from("results").join(now.to_string())
    });
    let run = compare::run(&options, command, interrupted)?;
    let written = xorlay_bench::report::write(&run, &out)?;
    println!("\n{}", xorlay_bench::report::summary_table(&run));
    println!("{}", xorlay_bench::report::targets(&run));
    println!(
        "raw results: {}\nreport: {}\ncharts: {}",
        written.json.display(),
        written.markdown.display(),
        written
            .charts
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}

fn relay(listen: SocketAddr, to: SocketAddr, interrupted: &Arc<AtomicBool>) -> anyhow::Result<()> {
    let socket = xorlay_bench::loadgen::bind_udp(listen, 8 << 20)?;
    let counters = xorlay_bench::relay::RelayCounters::default();
    println!("relaying {listen} -> {to} until Ctrl-C");
    xorlay_bench::relay::run(&socket, to, &counters, interrupted)?;
    println!(
        "received {}, sent {}",
        counters.received.load(Ordering::Relaxed),
        counters.sent.load(Ordering::Relaxed)
    );
    Ok(())
}
