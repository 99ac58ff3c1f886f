//! Who holds a resource a router needs: the processes with a UDP socket on
//! a port, or with the XDP link of an interface, in this network namespace.
//! Read from /proc (socket inodes in `/proc/net/udp{,6}` matched against
//! `/proc/<pid>/fd`; XDP links by `link_type`/`ifindex` in
//! `/proc/<pid>/fdinfo`), so the answer names the actual holder whatever
//! it is, with no pid file that a crash could leave stale. Needs the
//! privileges `run` has anyway (other processes' fds are visible to root).

use std::collections::HashSet;
use std::fmt;

/// Most processes and most descriptors per process looked at (bounds).
const PROCESSES_MAX: usize = 1 << 16;
const FDS_MAX: usize = 1 << 16;

/// A process holding a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its pid.
    pub pid: u32,
    /// Its command name (`/proc/<pid>/comm`).
    pub comm: String,
}

impl Holder {
    /// Whether it is an xorlay router.
    pub fn is_xorlay(&self) -> bool {
        self.comm == "xorlay"
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (pid {})", self.comm, self.pid)
    }
}

/// Processes other than this one with a UDP socket bound to `port` in this
/// network namespace.
pub fn udp_port_holders(port: u16) -> Vec<Holder> {
    let inodes = udp_port_inodes(port);
    if inodes.is_empty() {
        return Vec::new();
    }
    processes_with(|pid| holds_any(pid, &inodes))
}

/// Whether process `pid` has a UDP socket bound to `port` in this network
/// namespace (one process's descriptors: cheap, for the hot-restart check).
pub fn pid_holds_udp_port(pid: u32, port: u16) -> bool {
    let inodes = udp_port_inodes(port);
    !inodes.is_empty() && holds_any(pid, &inodes)
}

fn udp_port_inodes(port: u16) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            inodes.extend(udp_inodes(&text, port));
        }
    }
    inodes
}

fn holds_any(pid: u32, inodes: &HashSet<u64>) -> bool {
    fd_targets(pid).any(|target| {
        target
            .strip_prefix("socket:[")
            .and_then(|rest| rest.strip_suffix(']'))
            .and_then(|inode| inode.parse::<u64>().ok())
            .is_some_and(|inode| inodes.contains(&inode))
    })
}

/// Socket inodes bound to local port `port` in a `/proc/net/udp{,6}` text.
pub fn udp_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            let inode: u64 = fields.get(9)?.parse().ok()?;
            (local_port == port && inode != 0).then_some(inode)
        })
        .collect()
}

/// Processes other than this one in this network namespace holding an XDP
/// link on interface `if_index`.
pub fn xdp_link_holders(if_index: u32) -> Vec<Holder> {
    let wanted = format!("ifindex:\t{if_index}");
    let Ok(own_netns) = std::fs::read_link("/proc/self/ns/net") else {
        return Vec::new();
    };
    processes_with(|pid| {
        if std::fs::read_link(format!("/proc/{pid}/ns/net")).ok() != Some(own_netns.clone()) {
            return false;
        }
        let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
            return false;
        };
        entries.take(FDS_MAX).flatten().any(|entry| {
            std::fs::read_to_string(entry.path()).is_ok_and(|info| {
                info.lines().any(|l| l == "link_type:\txdp") && info.lines().any(|l| l == wanted)
            })
        })
    })
}

/// The processes (not this one) for which `holds(pid)` is true.
fn processes_with(mut holds: impl FnMut(u32) -> bool) -> Vec<Holder> {
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.take(PROCESSES_MAX).flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != own && holds(pid) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim_end().to_string())
                .unwrap_or_else(|_| "?".into());
            found.push(Holder { pid, comm });
        }
    }
    found
}

/// Where each descriptor of `pid` points (`socket:[N]`, paths).
fn fd_targets(pid: u32) -> impl Iterator<Item = String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .take(FDS_MAX)
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
}

/// `holders` as a list for a message: "xorlay (pid 12), nc (pid 40)".
pub fn describe(holders: &[Holder]) -> String {
    holders
        .iter()
        .map(Holder::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_inode_of_a_port_and_its_holder() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n  548: 00000000:12BF 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 29111 2 000000001490cb6d 0\n  549: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 29112 2 000000001490cb6d 0\n";
        assert_eq!(udp_inodes(table, 4799), vec![29111]);
        assert_eq!(udp_inodes(table, 53), vec![29112]);
        assert!(udp_inodes(table, 1).is_empty());
        // A real socket of this test held by this process is not reported
        // (it is not another process), and finding it does not panic.
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
        let port = socket.local_addr().expect("bound").port();
        assert!(
            udp_port_holders(port)
                .iter()
                .all(|h| h.pid != std::process::id())
        );
    }
}
