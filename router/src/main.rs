//! The `xorlay` command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::{Parser, Subcommand};

use xorlay::config::Config;
use xorlay::io::{admin, keyfile, router::Router};

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
    /// Run the router until SIGINT or SIGTERM.
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
    },
    /// Print the node ID of a key file.
    Id {
        /// The secret key file.
        #[arg(long, short)]
        key: PathBuf,
    },
    /// Validate a config and its key file without starting anything.
    Check {
        /// The router's TOML config.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print a running router's counters as JSON.
    Stats {
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
    },
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
        Command::Keygen { out, force } => {
            let identity = keyfile::generate(&out, force)?;
            eprintln!("wrote {} (mode 0600); node ID:", out.display());
            println!("{}", identity.node_id());
            Ok(())
        }
        Command::Id { key } => {
            println!("{}", keyfile::read(&key)?.node_id());
            Ok(())
        }
        Command::Check { config } => {
            let config = Config::load(&config)?;
            let identity = keyfile::read(&config.key_file)?;
            xorlay::io::control::static_table(
                identity.node_id(),
                &config.listen,
                &config.neighbors,
            )
            .context("neighbors in the config")?;
            println!(
                "config ok: node {} listening on {}, {} neighbor(s), XDP on {:?} ({:?})",
                identity.node_id(),
                config.listen,
                config.neighbors.len(),
                config.interfaces,
                config.xdp_mode
            );
            Ok(())
        }
        Command::Stats { config, socket } => {
            let path = match (socket, config) {
                (Some(socket), _) => socket,
                (None, Some(config)) => Config::load(&config)?.admin_socket,
                (None, None) => anyhow::bail!("pass --config FILE or --socket PATH"),
            };
            let reply = admin::request(&path, "stats")?;
            let value: serde_json::Value =
                serde_json::from_str(&reply).context("the router's reply is not JSON")?;
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(())
        }
    }
}

fn run(config_path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, shutdown.clone())
            .context("installing the SIGINT/SIGTERM handler")?;
    }
    let mut router = Router::start(&config)?;
    router.run_until(&shutdown);
    log::info!("signal received: stopping workers and detaching XDP");
    router.shutdown()?;
    log::info!("stopped cleanly");
    Ok(())
}
