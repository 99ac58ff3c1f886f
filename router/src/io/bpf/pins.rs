//! The pin directory (`[xdp] pin_dir`): which maps are pinned and their
//! layouts ([`PINNED_MAPS`]), the owner record, and the survey and cleanup of
//! what an earlier instance left.

use std::io;
use std::path::{Path, PathBuf};

use aya::maps::{Array, Map, MapData, MapType};
use aya::programs::links::{FdLink, PinnedLink};

use super::abi::Owner;
use super::error::{BpfError, chain};
use super::{
    CONFIG_MAP_NAME, LINK_PIN_PREFIX, NEIGHBORS_MAP_NAME, OWNER_MAP_NAME, ROUTES_MAP_NAME,
    STATS_MAP_NAME, TX_PORTS_MAP_NAME,
};
use crate::wire::consts;

/// Opens a pinned map of `pin_dir` as a typed map.
pub(super) fn open_pinned_map<T>(pin_dir: &Path, name: &str) -> Result<T, String>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let data = MapData::from_pin(pin_dir.join(name)).map_err(|e| chain(&e))?;
    let map = Map::from_map_data(data).map_err(|e| chain(&e))?;
    T::try_from(map).map_err(|e| chain(&e))
}

/// The layout of a map this build pins: a pinned map is reused only if all
/// of it matches (else its state cannot be read right).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MapLayout {
    /// The map's name in [`XDP_OBJECT`](super::XDP_OBJECT) and its pin name.
    pub name: &'static str,
    /// Its type.
    pub map_type: MapType,
    /// Key size, bytes.
    pub key_size: u32,
    /// Value size, bytes (per CPU for per-CPU maps).
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
}

/// Every map pinned in a pin directory, with the layout of this build
/// (checked against the loaded object by a test).
pub const PINNED_MAPS: [MapLayout; 8] = [
    MapLayout {
        name: STATS_MAP_NAME,
        map_type: MapType::PerCpuArray,
        key_size: 4,
        value_size: 8,
        max_entries: consts::XDP_STAT_COUNT as u32,
    },
    MapLayout {
        name: NEIGHBORS_MAP_NAME,
        map_type: MapType::PerCpuHash,
        key_size: consts::NEIGHBOR_KEY_LEN as u32,
        value_size: 8,
        max_entries: consts::NEIGHBORS_MAX as u32,
    },
    MapLayout {
        name: CONFIG_MAP_NAME,
        map_type: MapType::Array,
        key_size: 4,
        value_size: consts::CONFIG_LEN as u32,
        max_entries: 1,
    },
    MapLayout {
        name: "xorlay_handshake_sources",
        map_type: MapType::LruHash,
        key_size: 16,
        value_size: 8,
        max_entries: consts::HANDSHAKE_SOURCES_MAX as u32,
    },
    MapLayout {
        name: "xorlay_handshake_global",
        map_type: MapType::Array,
        key_size: 4,
        value_size: 16,
        max_entries: 1,
    },
    MapLayout {
        name: ROUTES_MAP_NAME,
        map_type: MapType::LruHash,
        key_size: consts::NODE_ID_LEN as u32,
        value_size: consts::ROUTE_LEN as u32,
        max_entries: consts::ROUTES_MAX as u32,
    },
    MapLayout {
        name: TX_PORTS_MAP_NAME,
        map_type: MapType::DevMapHash,
        key_size: 4,
        value_size: 8,
        max_entries: consts::TX_PORTS_MAX as u32,
    },
    MapLayout {
        name: OWNER_MAP_NAME,
        map_type: MapType::Array,
        key_size: 4,
        value_size: 16,
        max_entries: 1,
    },
];

/// The layout of the map pinned at `path`, or why it has none.
pub fn pinned_layout(path: &Path) -> Result<MapLayout, String> {
    let data = MapData::from_pin(path).map_err(|e| chain(&e))?;
    let info = data.info().map_err(|e| chain(&e))?;
    Ok(MapLayout {
        name: "",
        map_type: info.map_type().map_err(|e| chain(&e))?,
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
    })
}

impl Owner {
    pub(super) fn of_process(pid: u32) -> Owner {
        Owner {
            pid,
            pad: 0,
            start_time: process_start_time(pid).unwrap_or(0),
        }
    }

    /// Whether the recorded process still runs (same PID, same start time).
    pub(super) fn is_alive(&self) -> bool {
        self.pid != 0 && process_start_time(self.pid) == Some(self.start_time)
    }
}

/// Start time of process `pid` in clock ticks after boot (field 22 of
/// `/proc/<pid>/stat`); `None` if there is no such process.
pub(super) fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // after it start behind the last ')'. Field 3 is the first one there.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// The pid of the live process that owns the XDP state pinned in
/// `pin_dir` (its owner record names it and it still runs), if any.
pub fn pinned_owner(pin_dir: &Path) -> Option<u32> {
    read_owner(pin_dir)
        .filter(Owner::is_alive)
        .map(|owner| owner.pid)
}

/// The owner record pinned in `dir`, if readable.
pub(super) fn read_owner(dir: &Path) -> Option<Owner> {
    let data = MapData::from_pin(dir.join(OWNER_MAP_NAME)).ok()?;
    let map = Map::from_map_data(data).ok()?;
    let owner: Array<MapData, Owner> = Array::try_from(map).ok()?;
    owner.get(&0, 0).ok()
}

/// `<pin_dir>/link-<interface>`.
pub(super) fn link_pin_path(pin_dir: &Path, interface: &str) -> PathBuf {
    pin_dir.join(format!("{LINK_PIN_PREFIX}{interface}"))
}

/// Removes a pin, logging a failure other than its absence.
pub(super) fn remove_pin(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        log::warn!("cannot remove the pin {}: {e}", path.display());
    }
}

/// Removes every pin of ours in `dir`, then `dir` itself if empty.
pub(super) fn remove_pin_dir(dir: &Path) {
    for layout in &PINNED_MAPS {
        remove_pin(&dir.join(layout.name));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(LINK_PIN_PREFIX) {
                remove_pin(&entry.path());
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => log::info!("removed the XDP pins in {}", dir.display()),
        Err(e) => log::warn!("cannot remove the pin directory {}: {e}", dir.display()),
    }
}

/// Creates `dir` if needed and checks it is on a bpf filesystem.
pub(super) fn prepare_pin_dir(dir: &Path) -> Result<(), BpfError> {
    let error = |detail: String| BpfError::Pin {
        path: dir.to_path_buf(),
        detail,
    };
    if !dir.is_absolute() {
        return Err(error("must be an absolute path".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        error(format!(
            "cannot create it ({e}); it must be on a bpf filesystem (`mount -t bpf bpf \
             /sys/fs/bpf`)"
        ))
    })?;
    let magic = crate::io::preflight::fs_magic(dir).map_err(|e| error(format!("statfs: {e}")))?;
    if magic != crate::io::preflight::BPF_FS_MAGIC {
        return Err(error(
            "is not on a bpf filesystem: mount one (`mount -t bpf bpf /sys/fs/bpf`) and put \
             pin_dir under it, e.g. /sys/fs/bpf/xorlay/<name>"
                .into(),
        ));
    }
    Ok(())
}

/// What [`survey_pin_dir`] leaves in a pin directory.
pub(super) struct Survey {
    /// The owner record, if present and readable.
    pub(super) owner: Option<Owner>,
    /// Whether state maps are pinned (to be reused).
    pub(super) maps_present: bool,
    /// Interfaces with a pinned XDP link.
    pub(super) links: Vec<String>,
}

/// Checks what is pinned in `dir` and removes what cannot be reused, saying
/// why: maps whose layout is not this build's (then all maps go: their
/// state belongs together), unknown `xorlay_*` entries, `link-*` entries
/// that are no XDP links. Anything else is not xorlay's: refused.
pub(super) fn survey_pin_dir(dir: &Path) -> Result<Survey, BpfError> {
    let mut mismatch: Vec<String> = Vec::new();
    let mut links = Vec::new();
    let mut maps_present = false;
    for name in pin_dir_names(dir)? {
        let path = dir.join(&name);
        if let Some(expected) = PINNED_MAPS.iter().find(|l| l.name == name) {
            match check_pinned_map(&path, expected) {
                Ok(()) => maps_present |= expected.name != OWNER_MAP_NAME,
                Err(why) => mismatch.push(why),
            }
        } else if let Some(interface) = name.strip_prefix(LINK_PIN_PREFIX) {
            if is_pinned_xdp_link(&path) {
                links.push(interface.to_string());
            } else {
                log::warn!(
                    "clearing {}: not a pinned XDP link (left by another build or by hand)",
                    path.display()
                );
                remove_pin(&path);
            }
        } else if name.starts_with("xorlay_") {
            log::warn!(
                "clearing {}: not a map this build pins (left by another build)",
                path.display()
            );
            remove_pin(&path);
        } else {
            return Err(BpfError::Pin {
                path,
                detail: "xorlay did not make this entry; give pin_dir a directory of its own \
                         (e.g. /sys/fs/bpf/xorlay/<name>), or remove the entry"
                    .into(),
            });
        }
    }
    if !mismatch.is_empty() {
        log::warn!(
            "clearing the pinned XDP maps in {} (their state cannot be trusted, starting with \
             empty maps): {}",
            dir.display(),
            mismatch.join("; ")
        );
        for layout in &PINNED_MAPS {
            remove_pin(&dir.join(layout.name));
        }
        maps_present = false;
    }
    let owner = if maps_present { read_owner(dir) } else { None };
    Ok(Survey {
        owner,
        maps_present,
        links,
    })
}

/// The names in `dir`, sorted.
fn pin_dir_names(dir: &Path) -> Result<Vec<String>, BpfError> {
    let unlistable = |e: std::io::Error| BpfError::Pin {
        path: dir.to_path_buf(),
        detail: format!("cannot list it: {e}"),
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unlistable)? {
        names.push(
            entry
                .map_err(unlistable)?
                .file_name()
                .to_string_lossy()
                .into_owned(),
        );
    }
    names.sort();
    Ok(names)
}

/// Whether the map pinned at `path` has this build's layout `expected`;
/// if not, why not.
fn check_pinned_map(path: &Path, expected: &MapLayout) -> Result<(), String> {
    let name = expected.name;
    match pinned_layout(path) {
        Ok(found)
            if MapLayout {
                name: expected.name,
                ..found
            } == *expected =>
        {
            Ok(())
        }
        Ok(found) => Err(format!(
            "{name} is a {:?} with {}-byte keys, {}-byte values and {} entries, this \
             build has a {:?} with {}, {} and {}",
            found.map_type,
            found.key_size,
            found.value_size,
            found.max_entries,
            expected.map_type,
            expected.key_size,
            expected.value_size,
            expected.max_entries
        )),
        Err(detail) => Err(format!("{name} is not a readable map ({detail})")),
    }
}

/// Whether `path` is a pinned XDP link.
fn is_pinned_xdp_link(path: &Path) -> bool {
    PinnedLink::from_pin(path)
        .ok()
        .map(FdLink::from)
        .and_then(|link| link.info().ok())
        .and_then(|info| info.link_type().ok())
        == Some(aya::programs::links::LinkType::Xdp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_liveness_needs_the_same_process() {
        let me = Owner::of_process(std::process::id());
        assert!(me.start_time > 0);
        assert!(me.is_alive());
        let reused = Owner {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!reused.is_alive(), "same PID, other start time");
        assert!(!Owner::of_process(0).is_alive());
        assert_eq!(process_start_time(u32::MAX), None);
    }
}
