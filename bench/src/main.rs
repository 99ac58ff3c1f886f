//! `xorlay-bench`: the namespace lab and the demo.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use xorlay::wire::overlay::{DEFAULT_PORT, golden};
use xorlay_bench::lab::{ChainOptions, Lab, Node};
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
    /// Build the chain lab, send traffic across the routers, print counters, clean up.
    Demo {
        /// Routers in the chain.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
        routers: u16,
        /// Data packets to send.
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
    /// Build the chain lab, start the routers and keep them running until Ctrl-C.
    Lab {
        /// Routers in the chain.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
        routers: u16,
    },
    /// Remove lab namespaces left behind by runs that were killed.
    Clean,
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
    let result = match Cli::parse().command {
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
            &interrupted,
        ),
        Cmd::Lab { routers } => lab(usize::from(routers), &interrupted),
        Cmd::Clean => {
            let removed = xorlay_bench::lab::clean_stale();
            println!("removed {} stale namespace(s)", removed.len());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xorlay-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn start_lab(routers: usize, xdp_mode: String) -> anyhow::Result<Lab> {
    let mut lab = Lab::chain(ChainOptions {
        routers,
        xdp_mode,
        ..ChainOptions::default()
    })?;
    let path: Vec<&str> = lab.nodes.iter().map(|n| n.role.as_str()).collect();
    println!(
        "lab: {} (one network namespace each, links in 198.18.0.0/16)",
        path.join(" -> ")
    );
    for node in &lab.nodes {
        println!("  {:<5} {}  ns {}", node.role, node.id(), node.netns);
    }
    lab.start_routers()?;
    println!("routers up; XDP attachment per router interface (ip -n <ns> link):");
    for (i, node) in lab.routers().iter().enumerate() {
        let links = lab.links(i + 1)?;
        for dev in ["west", "east"] {
            let mode = xdp_mode_of(&links, dev);
            println!("  {:<5} {dev}: {mode}", node.role);
        }
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

fn demo(
    routers: usize,
    packets: u64,
    rate: u64,
    payload: usize,
    xdp_mode: String,
    interrupted: &Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut lab = start_lab(routers, xdp_mode)?;
    let generator = lab.generator().clone();
    let sink_node = lab.sink().clone();
    let first_hop = Node::addr(lab.routers()[0].west).context("r1 has a west address")?;
    let sink_addr = Node::addr(sink_node.west).context("sink has a west address")?;
    let gen_bind = SocketAddr::from((generator.east.context("gen has an east address")?, 0));

    let sink = Sink::start(&sink_node.netns, sink_addr, sink_node.id(), packets)?;
    println!(
        "\nsending {packets} data packets of {} bytes from gen to sink's node ID at {rate} pps ...",
        payload + 72
    );
    let sender = {
        let flow = DataFlow {
            src: generator.id(),
            dst: sink_node.id(),
            to: first_hop,
            count: packets,
            payload_len: payload,
            rate_pps: rate,
        };
        let stop = interrupted.clone();
        netns::in_netns(&generator.netns, move || {
            let socket = std::net::UdpSocket::bind(gen_bind).context("gen bind")?;
            Ok(traffic::send_data(&socket, &flow, &stop))
        })?
    };
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("generator panicked"))??;
    let all_in = wait_until(Duration::from_secs(5), || {
        sink.valid() >= sent.sent || interrupted.load(Ordering::Relaxed)
    });
    let report = sink.finish()?;
    if interrupted.load(Ordering::Relaxed) {
        bail!("interrupted; the lab is being removed");
    }
    println!(
        "sent {} in {:.2} s; delivered {} to sink ({:.2}%), duplicates {}, reordered {}",
        sent.sent,
        sent.elapsed.as_secs_f64(),
        report.valid,
        100.0 * report.valid as f64 / sent.sent.max(1) as f64,
        report.duplicates,
        report.reordered,
    );
    println!(
        "hop limit on arrival: {:?} (sent with 64; each of the {routers} routers decrements it once)",
        report.hop_limits
    );
    println!(
        "one-way latency gen -> sink: min {:.1} us, mean {:.1} us, max {:.1} us",
        report.latency_us_min, report.latency_us_mean, report.latency_us_max
    );

    let malformed: Vec<Vec<u8>> = golden::malformed()
        .into_iter()
        .map(|(_, bytes, _)| bytes)
        .collect();
    let repeat = 100;
    println!(
        "\nsending {} malformed overlay packets to r1 ({} kinds x {repeat}) ...",
        malformed.len() * repeat,
        malformed.len()
    );
    let before = lab.stats(1)?;
    let kinds = malformed.len() as u64;
    traffic::send_raw_in(
        &generator.netns,
        gen_bind,
        first_hop,
        malformed,
        repeat as u64,
    )?;
    let expected_drops = xdp_dropped(&before) + kinds * repeat as u64;
    wait_until(Duration::from_secs(5), || {
        lab.stats(1)
            .is_ok_and(|s| xdp_dropped(&s) >= expected_drops)
    });
    let after = lab.stats(1)?;
    println!(
        "r1 XDP dropped {} of them; r1 workers received {} of them",
        xdp_dropped(&after) - xdp_dropped(&before),
        counter(&after, "/total/rx_packets") - counter(&before, "/total/rx_packets"),
    );

    println!("\nper-router counters:");
    println!(
        "  {:<5} {:>10} {:>10} {:>10} {:>10} {:>12} {:>12}",
        "", "xdp_pass", "xdp_drop", "worker_rx", "forwarded", "delivered", "worker_drop"
    );
    for i in 1..=routers {
        let s = lab.stats(i)?;
        let worker_drops: u64 = s
            .pointer("/total")
            .and_then(|t| t.as_object())
            .map(|t| {
                t.iter()
                    .filter(|(k, _)| k.starts_with("drop_"))
                    .filter_map(|(_, v)| v.as_u64())
                    .sum()
            })
            .unwrap_or(0);
        println!(
            "  r{i:<4} {:>10} {:>10} {:>10} {:>10} {:>12} {:>12}",
            counter(&s, "/xdp/pass_overlay"),
            xdp_dropped(&s),
            counter(&s, "/total/rx_packets"),
            counter(&s, "/total/forwarded"),
            counter(&s, "/total/delivered"),
            worker_drops,
        );
    }
    for (i, status) in lab.stop_routers() {
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => println!("r{i} exited with {s}"),
            Err(e) => println!("r{i}: {e}"),
        }
    }
    drop(lab);
    println!("\nrouters stopped, XDP detached, namespaces removed.");
    if !all_in || report.valid < sent.sent {
        bail!(
            "{} of {} packets did not arrive at the sink",
            sent.sent - report.valid,
            sent.sent
        );
    }
    Ok(())
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

fn lab(routers: usize, interrupted: &Arc<AtomicBool>) -> anyhow::Result<()> {
    let lab = start_lab(routers, "native".into())?;
    println!(
        "\nlab running; configs, keys, admin sockets and logs in {}",
        lab.dir.display()
    );
    println!(
        "e.g. `xorlay stats --socket {}`",
        lab.admin_socket(1).display()
    );
    println!(
        "overlay port {DEFAULT_PORT}; send from `ip netns exec {} ...` to {}. Ctrl-C removes everything.",
        lab.generator().netns,
        Node::addr(lab.routers()[0].west)
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    while !interrupted.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("stopping routers and removing the lab ...");
    Ok(())
}
