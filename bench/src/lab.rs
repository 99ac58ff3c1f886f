//! The namespace lab: gen -> r1 -> ... -> rN -> sink, one network namespace
//! per node, one veth pair per link, addresses from 198.18.0.0/15 only.
//! Everything it creates (namespaces, the veths inside them, a scratch
//! folder with keys, configs and logs) is removed when the `Lab` is dropped,
//! also on panic; router processes are stopped first.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use xorlay::core::NodeId;
use xorlay::core::identity::Identity;
use xorlay::io::keyfile;
use xorlay::wire::overlay::DEFAULT_PORT;

use crate::netns::{self, ip};

/// Namespace names of this crate start with this, then the owner's PID.
const PREFIX: &str = "xl";
/// Most routers in a chain (one /24 per link from 198.18.0.0/16).
pub const CHAIN_ROUTERS_MAX: usize = 16;
/// How long a router may take to come up (admin socket answers).
const ROUTER_START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a router may take to exit after SIGTERM before SIGKILL.
const ROUTER_STOP_TIMEOUT: Duration = Duration::from_secs(5);

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// One node of the chain.
#[derive(Debug, Clone)]
pub struct Node {
    /// Role: "gen", "r1".., "sink".
    pub role: String,
    /// Its network namespace.
    pub netns: String,
    /// Its identity.
    pub identity: Identity,
    /// Address on the link toward gen (none for gen).
    pub west: Option<Ipv4Addr>,
    /// Address on the link toward sink (none for sink).
    pub east: Option<Ipv4Addr>,
}

impl Node {
    /// The node ID.
    pub fn id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// The overlay socket address on the given side.
    pub fn addr(side: Option<Ipv4Addr>) -> Option<SocketAddr> {
        side.map(|ip| SocketAddr::V4(SocketAddrV4::new(ip, DEFAULT_PORT)))
    }
}

/// Options of a chain lab.
#[derive(Debug, Clone)]
pub struct ChainOptions {
    /// Routers between gen and sink.
    pub routers: usize,
    /// XDP mode in the router configs.
    pub xdp_mode: String,
    /// Workers per router.
    pub workers: usize,
}

impl Default for ChainOptions {
    fn default() -> ChainOptions {
        ChainOptions {
            routers: 3,
            xdp_mode: "native".into(),
            workers: 1,
        }
    }
}

/// A running router process.
struct RouterProcess {
    child: Child,
    index: usize,
}

/// The lab. Dropping it stops routers and removes everything it made.
pub struct Lab {
    /// gen, r1..rN, sink.
    pub nodes: Vec<Node>,
    /// Scratch folder: keys, configs, admin sockets, logs.
    pub dir: PathBuf,
    namespaces: Vec<String>,
    routers: Vec<RouterProcess>,
    xorlay_bin: PathBuf,
    options: ChainOptions,
}

impl Lab {
    /// Builds the chain topology (no routers started yet).
    pub fn chain(options: ChainOptions) -> anyhow::Result<Lab> {
        if options.routers == 0 || options.routers > CHAIN_ROUTERS_MAX {
            bail!(
                "a chain has 1 to {CHAIN_ROUTERS_MAX} routers, not {}",
                options.routers
            );
        }
        require_root()?;
        let xorlay_bin = find_xorlay_bin()?;
        clean_stale();
        let tag = format!(
            "{PREFIX}{}x{}",
            std::process::id(),
            LAB_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("xorlay-lab-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

        let identities = chain_identities(options.routers)?;
        let count = identities.len();
        let nodes: Vec<Node> = identities
            .into_iter()
            .enumerate()
            .map(|(i, identity)| {
                let role = match i {
                    0 => "gen".to_string(),
                    i if i == count - 1 => "sink".to_string(),
                    i => format!("r{i}"),
                };
                Node {
                    netns: format!("{tag}-{role}"),
                    role,
                    identity,
                    // Link i joins node i (198.18.i.1) and node i+1 (198.18.i.2).
                    west: (i > 0).then(|| Ipv4Addr::new(198, 18, (i - 1) as u8, 2)),
                    east: (i < count - 1).then(|| Ipv4Addr::new(198, 18, i as u8, 1)),
                }
            })
            .collect();
        let mut lab = Lab {
            nodes,
            dir,
            namespaces: Vec::new(),
            routers: Vec::new(),
            xorlay_bin,
            options,
        };
        lab.build()?; // on error, Drop removes what was made
        Ok(lab)
    }

    fn build(&mut self) -> anyhow::Result<()> {
        for node in &self.nodes {
            ip(&["netns", "add", &node.netns])?;
            self.namespaces.push(node.netns.clone());
            ip(&["-n", &node.netns, "link", "set", "lo", "up"])?;
        }
        for pair in self.nodes.windows(2) {
            let (left, right) = (&pair[0], &pair[1]);
            // Created directly inside the two namespaces: the host's own
            // namespace never sees these links.
            ip(&[
                "-n",
                &left.netns,
                "link",
                "add",
                "east",
                "type",
                "veth",
                "peer",
                "name",
                "west",
                "netns",
                &right.netns,
            ])?;
            for (ns, dev, addr) in [
                (&left.netns, "east", left.east),
                (&right.netns, "west", right.west),
            ] {
                let addr = addr.context("chain link endpoint has an address")?;
                ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
                ip(&["-n", ns, "link", "set", dev, "up"])?;
                // UDP sent from a socket over veth with TX checksum offload
                // reaches an XDP-enabled peer with an unfinished checksum.
                netns::run(
                    "ip",
                    &["netns", "exec", ns, "ethtool", "-K", dev, "tx", "off"],
                )?;
            }
        }
        Ok(())
    }

    /// The generator node.
    pub fn generator(&self) -> &Node {
        &self.nodes[0]
    }

    /// The sink node.
    pub fn sink(&self) -> &Node {
        &self.nodes[self.nodes.len() - 1]
    }

    /// The routers, r1..rN.
    pub fn routers(&self) -> &[Node] {
        &self.nodes[1..self.nodes.len() - 1]
    }

    /// Config path of router `i` (1-based, as in "r1").
    pub fn config_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("r{i}.toml"))
    }

    /// Admin socket of router `i`.
    pub fn admin_socket(&self, i: usize) -> PathBuf {
        self.dir.join(format!("r{i}.sock"))
    }

    /// Log file of router `i`.
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("r{i}.log"))
    }

    /// Writes each router's key and config, starts them, and waits until
    /// every admin socket answers.
    pub fn start_routers(&mut self) -> anyhow::Result<()> {
        for i in 1..self.nodes.len() - 1 {
            let key = self.dir.join(format!("r{i}.key"));
            keyfile::write(&key, &self.nodes[i].identity, true)?;
            std::fs::write(self.config_path(i), self.router_config(i, &key))?;
            let log = std::fs::File::create(self.log_path(i))?;
            let child = Command::new("ip")
                .args(["netns", "exec", &self.nodes[i].netns])
                .arg(&self.xorlay_bin)
                .arg("run")
                .arg("--config")
                .arg(self.config_path(i))
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", self.xorlay_bin.display()))?;
            self.routers.push(RouterProcess { child, index: i });
        }
        for i in 1..self.nodes.len() - 1 {
            self.wait_router_up(i)?;
        }
        Ok(())
    }

    fn wait_router_up(&mut self, i: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + ROUTER_START_TIMEOUT;
        loop {
            if self.stats(i).is_ok() {
                return Ok(());
            }
            if let Some(p) = self.routers.iter_mut().find(|p| p.index == i)
                && let Some(status) = p.child.try_wait()?
            {
                bail!(
                    "router r{i} exited during start-up ({status}):\n{}",
                    self.log_tail(i)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "router r{i} did not come up within {ROUTER_START_TIMEOUT:?}:\n{}",
                    self.log_tail(i)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn router_config(&self, i: usize, key: &Path) -> String {
        let mut neighbors = String::new();
        for j in [i - 1, i + 1] {
            let n = &self.nodes[j];
            // The neighbor's address on the link shared with router i.
            let addr = if j < i { n.east } else { n.west };
            if let Some(addr) = Node::addr(addr) {
                neighbors.push_str(&format!(
                    "\n[[neighbor]]\nid = \"{}\"\naddress = \"{addr}\"\n",
                    n.id()
                ));
            }
        }
        format!(
            "# xorlay lab router r{i} ({})\nkey_file = \"{}\"\n\n[underlay]\nlisten = \"[::]:{DEFAULT_PORT}\"\ninterfaces = [\"west\", \"east\"]\nxdp_mode = \"{}\"\n\n[dataplane]\nworkers = {}\nbuffer_count = 1024\n\n[admin]\nsocket = \"{}\"\n{neighbors}",
            self.nodes[i].id(),
            key.display(),
            self.options.xdp_mode,
            self.options.workers,
            self.admin_socket(i).display(),
        )
    }

    /// Router `i`'s counters, as JSON.
    pub fn stats(&self, i: usize) -> anyhow::Result<serde_json::Value> {
        let reply = xorlay::io::admin::request(&self.admin_socket(i), "stats")?;
        serde_json::from_str(&reply).context("router stats are not JSON")
    }

    /// `ip -d link show` inside router `i`'s namespace.
    pub fn links(&self, i: usize) -> anyhow::Result<String> {
        ip(&["-n", &self.nodes[i].netns, "-d", "link", "show"])
    }

    /// The last lines of router `i`'s log.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Sends SIGTERM to every router and waits for each to exit (SIGKILL
    /// after a timeout). Returns each router's exit status.
    pub fn stop_routers(&mut self) -> Vec<(usize, std::io::Result<ExitStatus>)> {
        for p in &self.routers {
            if let Ok(pid) = i32::try_from(p.child.id()) {
                // SAFETY: plain kill(2) on our own child's PID.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        let mut results = Vec::new();
        for mut p in self.routers.drain(..) {
            let deadline = Instant::now() + ROUTER_STOP_TIMEOUT;
            let status = loop {
                match p.child.try_wait() {
                    Ok(Some(status)) => break Ok(status),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Ok(None) => {
                        log::warn!(
                            "router r{} ignored SIGTERM for {ROUTER_STOP_TIMEOUT:?}; killing it",
                            p.index
                        );
                        let _ = p.child.kill();
                        break p.child.wait();
                    }
                    Err(e) => break Err(e),
                }
            };
            results.push((p.index, status));
        }
        results
    }

    fn teardown(&mut self) {
        self.stop_routers();
        for ns in self.namespaces.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("lab cleanup: {e:#}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for p in &self.routers {
                eprintln!("--- r{} log ---\n{}", p.index, self.log_tail(p.index));
            }
        }
        self.teardown();
    }
}

/// Identities for gen, r1..rN, sink such that each hop is strictly closer to
/// the sink than the one before: greedy XOR routing then walks the chain.
fn chain_identities(routers: usize) -> anyhow::Result<Vec<Identity>> {
    let random = || -> anyhow::Result<Identity> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)
            .map_err(|e| anyhow::anyhow!("the OS gave no random bytes: {e}"))?;
        Ok(Identity::from_seed(&seed))
    };
    let sink = random()?;
    let mut others = (0..=routers)
        .map(|_| random())
        .collect::<anyhow::Result<Vec<Identity>>>()?;
    // Farthest from the sink first: gen, r1, ..., rN.
    others.sort_by_key(|id| std::cmp::Reverse(id.node_id().distance(&sink.node_id())));
    others.push(sink);
    Ok(others)
}

fn require_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the lab creates network namespaces and attaches XDP: run it as root (e.g. `sudo make demo`)"
        );
    }
    Ok(())
}

/// The `xorlay` binary: $XORLAY_BIN, or beside this executable (target/*/),
/// or one level up (target/*/deps/ for tests).
pub fn find_xorlay_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("XORLAY_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("xorlay");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "cannot find the `xorlay` binary beside {}: build it first (`cargo build --workspace --bins`) or set XORLAY_BIN",
        exe.display()
    )
}

/// Removes lab namespaces whose owning process no longer exists (left by a
/// run that was killed). Namespaces of live labs are left alone.
pub fn clean_stale() -> Vec<String> {
    let mut removed = Vec::new();
    for ns in netns::list() {
        let Some(rest) = ns.strip_prefix(PREFIX) else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Ok(pid) = digits.parse::<u32>() else {
            continue;
        };
        if !rest[digits.len()..].starts_with('x') || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if ip(&["netns", "del", &ns]).is_ok() {
            removed.push(ns);
        }
    }
    if !removed.is_empty() {
        eprintln!(
            "lab: removed {} namespace(s) left by an earlier run: {}",
            removed.len(),
            removed.join(" ")
        );
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_identities_get_strictly_closer_to_the_sink() {
        for routers in 1..6 {
            let ids = chain_identities(routers).expect("OS randomness");
            assert_eq!(ids.len(), routers + 2);
            let sink = ids[ids.len() - 1].node_id();
            for pair in ids.windows(2) {
                assert!(pair[1].node_id().distance(&sink) < pair[0].node_id().distance(&sink));
            }
        }
    }
}
