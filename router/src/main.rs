//! The `xorlay` command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::{Parser, Subcommand};

use xorlay::config::Config;
use xorlay::core::NodeId;
use xorlay::core::identity::{DIFFICULTY_MAX, puzzle_bits};
use xorlay::io::{admin, keyfile, preflight, router::Router};

#[derive(Parser)]
#[command(
    name = "xorlay",
    version,
    about = "Overlay router: XDP + io_uring, XOR (Kademlia) routing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router until SIGINT or SIGTERM (SIGHUP, SIGUSR1 and SIGUSR2
    /// are logged and ignored).
    Run {
        /// The router's TOML config (see deploy/xorlay.example.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Create a node key (mode 0600) and print its node ID.
    Keygen {
        /// Where to write the secret key.
        #[arg(long, short)]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
        /// Search for a key whose ID solves the S/Kademlia puzzle at this many
        /// bits (match the network's control.difficulty; each bit doubles the work).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=i64::from(DIFFICULTY_MAX)))]
        difficulty: u32,
    },
    /// Print the node ID of a key file.
    Id {
        /// The secret key file.
        #[arg(long, short)]
        key: PathBuf,
    },
    /// Validate a config and check that this host has what `run` needs
    /// (key, interfaces, capabilities, paths, the port), starting nothing.
    Check {
        /// The router's TOML config.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print a running router's counters as JSON.
    Stats {
        #[command(flatten)]
        admin: AdminTarget,
    },
    /// Print how a running router would forward to a node: the next hop,
    /// the routing state it comes from and why (JSON).
    Route {
        /// The destination's node ID (64 hex digits).
        node_id: String,
        #[command(flatten)]
        admin: AdminTarget,
    },
}

/// Which running router an admin command talks to.
#[derive(clap::Args, Debug)]
struct AdminTarget {
    /// The router's config (its [admin] socket is used).
    #[arg(
        long,
        short,
        conflicts_with = "socket",
        required_unless_present = "socket"
    )]
    config: Option<PathBuf>,
    /// The admin socket path.
    #[arg(long)]
    socket: Option<PathBuf>,
}

impl AdminTarget {
    /// The admin socket: given, or the config's.
    fn socket_path(self) -> anyhow::Result<PathBuf> {
        match (self.socket, self.config) {
            (Some(socket), _) => Ok(socket),
            (None, Some(config)) => Ok(Config::load(&config)?.admin_socket),
            (None, None) => anyhow::bail!("pass --config FILE or --socket PATH"),
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let cli = Cli::parse();
    match execute(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xorlay: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => run(&config),
        Command::Keygen {
            out,
            force,
            difficulty,
        } => {
            let identity = keyfile::generate_with_difficulty(&out, force, difficulty)?;
            eprintln!(
                "wrote {} (mode 0600), puzzle bits {}; node ID:",
                out.display(),
                puzzle_bits(&identity.node_id())
            );
            println!("{}", identity.node_id());
            Ok(())
        }
        Command::Id { key } => {
            println!("{}", keyfile::read(&key)?.node_id());
            Ok(())
        }
        Command::Check {
            config: config_path,
        } => {
            let config = Config::load(&config_path)?;
            let report = preflight::check(&config);
            if let [problem] = report.problems.as_slice() {
                anyhow::bail!("{problem}");
            }
            for problem in &report.problems {
                eprintln!("xorlay: problem: {problem}");
            }
            anyhow::ensure!(
                report.problems.is_empty(),
                "config {}: {} problem(s) on this host, each listed above with its fix; `xorlay run` would fail",
                config_path.display(),
                report.problems.len()
            );
            println!(
                "config ok: node {} listening on {}, {} seed(s), {} known peer(s), XDP on {:?} ({:?}); this host has what `run` needs",
                report
                    .node_id
                    .map_or_else(|| "?".to_string(), |id| id.to_string()),
                config.listen,
                config.control.seeds.len(),
                config.neighbors.len(),
                config.interfaces,
                config.xdp_mode
            );
            Ok(())
        }
        Command::Stats { admin } => print_reply(&admin.socket_path()?, "stats"),
        Command::Route { node_id, admin } => {
            let dst: NodeId = node_id.parse().map_err(|e| {
                anyhow::anyhow!(
                    "{node_id:?} is not a node ID ({e}): give 64 hex digits, as `xorlay id` prints"
                )
            })?;
            print_reply(&admin.socket_path()?, &format!("route {dst}"))
        }
    }
}

/// Sends `request` to the admin socket at `path` and prints the JSON reply.
fn print_reply(path: &std::path::Path, request: &str) -> anyhow::Result<()> {
    let reply = admin::request(path, request)?;
    let value: serde_json::Value =
        serde_json::from_str(&reply).context("the router's reply is not JSON")?;
    if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
        anyhow::bail!("the router says: {error}");
    }
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

fn run(config_path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, shutdown.clone())
            .context("installing the SIGINT/SIGTERM handler")?;
    }
    // Signals an operator or logrotate may send: never fatal. Reloading is
    // not implemented; SIGHUP and SIGUSR1/2 are logged and ignored (SIGPIPE
    // is ignored by the Rust runtime: a closed pipe is an error on write).
    let mut ignored = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGUSR1,
        signal_hook::consts::SIGUSR2,
    ])
    .context("installing the SIGHUP/SIGUSR1/SIGUSR2 handler")?;
    let ignored_handle = ignored.handle();
    let ignored_thread = std::thread::Builder::new()
        .name("xorlay-signals".into())
        .spawn(move || {
            for signal in ignored.forever() {
                let name = match signal {
                    signal_hook::consts::SIGHUP => "SIGHUP",
                    signal_hook::consts::SIGUSR1 => "SIGUSR1",
                    _ => "SIGUSR2",
                };
                log::info!(
                    "{name} received and ignored: xorlay does not reload its config; restart it \
                     to apply changes (with [xdp] pin_dir a restart keeps XDP running), SIGTERM \
                     stops it"
                );
            }
        })
        .context("starting the signal thread")?;
    let started = Router::start(&config);
    let mut router = match started {
        Ok(router) => router,
        Err(e) => {
            ignored_handle.close();
            let _ = ignored_thread.join();
            return Err(e.into());
        }
    };
    let end = router.run_until(&shutdown);
    ignored_handle.close();
    let _ = ignored_thread.join();
    match end {
        xorlay::io::router::RunEnd::Shutdown => {
            log::info!("signal received: stopping workers and detaching XDP")
        }
        xorlay::io::router::RunEnd::TakenOver => {
            log::info!("taken over by a newer instance: stopping workers")
        }
    }
    router.shutdown()?;
    log::info!("stopped cleanly");
    Ok(())
}
