//! `xorlay check`: everything `xorlay run` will need from this host,
//! checked without starting anything, each problem with its fix.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::core::NextHopTable;
use crate::core::identity::puzzle_bits;
use crate::io::bpf::check_capabilities;
use crate::io::keyfile;
use crate::io::privilege::whoami;
use crate::io::router::check_port;

/// `statfs` magic of a bpf filesystem.
pub const BPF_FS_MAGIC: u32 = 0xcafe_4a11;

/// What `check` found: the node ID if the key was usable, and every
/// problem (empty: `run` has what it needs here).
#[derive(Debug, Default)]
pub struct Report {
    /// This node's ID, from the key file.
    pub node_id: Option<crate::core::NodeId>,
    /// Each problem, one line with its fix.
    pub problems: Vec<String>,
}

/// Checks on this host, in this network namespace and as this user, what
/// `run` with `config` will need: the key file readable and strong enough,
/// the neighbor list, each interface present, the capabilities for XDP,
/// `xdp.pin_dir` on a bpf filesystem (or creatable on one), the
/// directories of `control.peers_file` and the admin socket writable, the
/// overlay port free (or held by the pinned owner: a hot restart).
pub fn check(config: &Config) -> Report {
    let mut report = Report::default();
    let problems = &mut report.problems;
    match keyfile::read(&config.key_file) {
        Ok(identity) => {
            let id = identity.node_id();
            report.node_id = Some(id);
            let bits = puzzle_bits(&id);
            if bits < config.control.difficulty {
                problems.push(format!(
                    "this node's key solves the puzzle at {bits} bits but control.difficulty is {}; make a key with `xorlay keygen --difficulty {} --out FILE`",
                    config.control.difficulty, config.control.difficulty
                ));
            }
            if let Err(e) = NextHopTable::new(id, config.neighbors.iter().map(|n| (n.id, ()))) {
                problems.push(format!("[[neighbor]] entries: {e}"));
            }
        }
        Err(e) => problems.push(e.to_string()),
    }
    for interface in &config.interfaces {
        if crate::io::bpf::if_index(interface).is_err() {
            problems.push(format!(
                "underlay.interfaces: {interface} does not exist in this network namespace; \
                 `ip link` lists the interfaces: fix the name, or create the interface first"
            ));
        }
    }
    if !config.interfaces.is_empty()
        && let Err(e) = check_capabilities()
    {
        problems.push(e.to_string());
    }
    if let Some(pin_dir) = &config.xdp.pin_dir
        && let Err(e) = pin_dir_usable(pin_dir)
    {
        problems.push(e);
    }
    if let Some(peers) = &config.control.peers_file
        && let Err(e) = peers_file_writable(peers)
    {
        problems.push(e);
    }
    if let Err(e) = creatable_in(&config.admin_socket) {
        problems.push(format!("admin.socket: {e}"));
    }
    if let Err(e) = check_port(config) {
        problems.push(e.to_string());
    }
    report
}

/// The filesystem magic of the filesystem `path` is on.
pub(crate) fn fs_magic(path: &Path) -> std::io::Result<u32> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: an all-zero statfs is a valid value for the call to fill.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `fs` valid for writing; both
    // outlive the call.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut fs) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // `f_type`'s integer type differs across targets; the magic fits 32 bits.
    #[allow(clippy::unnecessary_cast)]
    Ok(fs.f_type as u32)
}

/// The deepest existing directory at or above `path` (bounded by the
/// path's components).
fn nearest_existing(path: &Path) -> Option<PathBuf> {
    path.ancestors().find(|p| p.is_dir()).map(Path::to_path_buf)
}

/// `xdp.pin_dir` is on a bpf filesystem, or can be created on one.
pub fn pin_dir_usable(pin_dir: &Path) -> Result<(), String> {
    if !pin_dir.is_absolute() {
        return Err(format!(
            "xdp.pin_dir = {}: must be an absolute path",
            pin_dir.display()
        ));
    }
    let Some(existing) = nearest_existing(pin_dir) else {
        return Err(format!(
            "xdp.pin_dir = {}: no directory above it exists",
            pin_dir.display()
        ));
    };
    match fs_magic(&existing) {
        Ok(BPF_FS_MAGIC) => match writable(&existing) {
            Ok(()) => Ok(()),
            Err(e) => Err(format!(
                "xdp.pin_dir = {}: {} is on a bpf filesystem but {e}",
                pin_dir.display(),
                existing.display()
            )),
        },
        Ok(_) => Err(format!(
            "xdp.pin_dir = {} is not on a bpf filesystem ({} is on another filesystem): mount \
             one (`mount -t bpf bpf /sys/fs/bpf`, in the router's network namespace too if it \
             runs in one) and put pin_dir under it, e.g. /sys/fs/bpf/xorlay/<name>",
            pin_dir.display(),
            existing.display()
        )),
        Err(e) => Err(format!(
            "xdp.pin_dir = {}: statfs {}: {e}",
            pin_dir.display(),
            existing.display()
        )),
    }
}

/// `control.peers_file` can be written: its directory exists (`run` does
/// not create it) and is writable, as the file is replaced by a rename.
pub fn peers_file_writable(path: &Path) -> Result<(), String> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "control.peers_file = {}: its directory {} does not exist: create it (`mkdir -p \
             {}`) or point peers_file elsewhere",
            path.display(),
            dir.display(),
            dir.display()
        ));
    }
    if path.is_dir() {
        return Err(format!(
            "control.peers_file = {} is a directory; name a file in it",
            path.display()
        ));
    }
    writable(dir).map_err(|e| {
        format!(
            "control.peers_file = {}: {e}; peers would not be kept across restarts",
            path.display()
        )
    })
}

/// A file can be created at `path` (missing directories are created by
/// `run`): the deepest existing directory above it is writable.
fn creatable_in(path: &Path) -> Result<(), String> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let Some(existing) = nearest_existing(parent) else {
        return Err(format!("no directory above {} exists", path.display()));
    };
    writable(&existing).map_err(|e| format!("{}: {e}", path.display()))
}

/// `dir` is writable and searchable by this process (`access(2)`: a
/// read-only filesystem fails even for root).
fn writable(dir: &Path) -> Result<(), String> {
    let c_dir = CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{} has a NUL byte", dir.display()))?;
    // SAFETY: `c_dir` is NUL-terminated and outlives the call.
    if unsafe { libc::access(c_dir.as_ptr(), libc::W_OK | libc::X_OK) } == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    Err(format!(
        "{} is not writable by xorlay, which runs as {} ({error}): change the directory's \
         owner or mode, or choose another path",
        dir.display(),
        whoami()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked_with_their_fix() {
        let err = peers_file_writable(Path::new("/nonexistent-xorlay/peers")).expect_err("no dir");
        assert!(err.contains("mkdir -p /nonexistent-xorlay"), "{err}");
        peers_file_writable(&std::env::temp_dir().join("peers")).expect("tmp is writable");
        let err = pin_dir_usable(&std::env::temp_dir().join("xorlay-pins")).expect_err("tmpfs");
        assert!(err.contains("not on a bpf filesystem"), "{err}");
        assert!(err.contains("mount -t bpf bpf"), "{err}");
    }
}
