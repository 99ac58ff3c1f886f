//! Loading the embedded object: [`load`], [`load_with`] and their
//! [`LoadOptions`], and the default runtime configuration a fresh object
//! gets.

use std::path::{Path, PathBuf};

use aya::maps::{Array, MapData};
use aya::programs::Xdp;
use aya::{Ebpf, EbpfLoader};

use super::abi;
use super::error::{BpfError, chain};
use super::pins::PINNED_MAPS;
use super::{
    CONFIG_MAP_NAME, DEFAULT_IDLE_TIMEOUT, FILTER_GLOBAL_NAME, PORT_GLOBAL_NAME, PROGRAM_NAME,
    XDP_OBJECT,
};
use crate::config::RateLimits;

/// How the program is loaded, beyond its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Run the filter step (default): drop data packets whose source is not
    /// in the neighbor allowlist, and apply the rate limits. Off, the
    /// program validates only (and uses the route cache once it has a local
    /// ID): for tests of validation alone and for debugging.
    pub filter_neighbors: bool,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            filter_neighbors: true,
        }
    }
}

/// Loads [`XDP_OBJECT`] with the overlay UDP port `port`, the neighbor filter
/// on, and loads the program into the kernel (verifier included), without
/// attaching it. Same as [`load_with`] and [`LoadOptions::default`].
pub fn load(port: u16) -> Result<Ebpf, BpfError> {
    load_with(port, LoadOptions::default())
}

/// Loads [`XDP_OBJECT`] with the overlay UDP port `port` and `options` and
/// loads the program into the kernel (verifier included), without attaching
/// it. The neighbor allowlist starts empty: with the filter on, no data
/// packet passes until it is filled ([`NeighborMap::sync`](super::NeighborMap::sync)). The runtime
/// configuration gets its defaults ([`RateLimits::default`],
/// [`DEFAULT_IDLE_TIMEOUT`], generation 1) and no local ID: the route cache
/// is not consulted until [`RouteCache::set_local_id`](super::RouteCache::set_local_id).
pub fn load_with(port: u16, options: LoadOptions) -> Result<Ebpf, BpfError> {
    load_inner(port, options, None)
}

/// [`load_with`], with the state maps ([`PINNED_MAPS`]) opened from or
/// pinned in `pin_dir` when given. A reused `xorlay_config` keeps its value
/// (generation included: cached routes stay valid); a new one gets the
/// defaults.
pub(super) fn load_inner(
    port: u16,
    options: LoadOptions,
    pin_dir: Option<&Path>,
) -> Result<Ebpf, BpfError> {
    let filter = u8::from(options.filter_neighbors);
    let pin_paths: Vec<(&str, PathBuf)> = match pin_dir {
        Some(dir) => PINNED_MAPS
            .iter()
            .map(|layout| (layout.name, dir.join(layout.name)))
            .collect(),
        None => Vec::new(),
    };
    let reuse_config = pin_dir.is_some_and(|dir| dir.join(CONFIG_MAP_NAME).exists());
    let mut loader = EbpfLoader::new();
    loader
        .override_global(PORT_GLOBAL_NAME, &port, true)
        .override_global(FILTER_GLOBAL_NAME, &filter, true);
    for (name, path) in &pin_paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader
        .load(XDP_OBJECT)
        .map_err(|e| BpfError::from_object(&e))?;
    // Before the program can run anywhere.
    if !reuse_config {
        write_default_config(&mut ebpf)?;
    }
    xdp_program(&mut ebpf)?
        .load()
        .map_err(|e| BpfError::from_program_load(&e))?;
    Ok(ebpf)
}

/// Writes the default runtime configuration into a freshly loaded object.
pub(super) fn write_default_config(ebpf: &mut Ebpf) -> Result<(), BpfError> {
    let map = ebpf
        .map_mut(CONFIG_MAP_NAME)
        .ok_or(BpfError::MissingObject {
            kind: "map",
            name: CONFIG_MAP_NAME,
        })?;
    let update_error = |e: aya::maps::MapError| BpfError::RouteCache {
        action: "update",
        map: CONFIG_MAP_NAME,
        detail: chain(&e),
    };
    let mut config: Array<&mut MapData, abi::Config> =
        Array::try_from(map).map_err(update_error)?;
    config
        .set(
            0,
            abi::Config::new(&RateLimits::default(), DEFAULT_IDLE_TIMEOUT),
            0,
        )
        .map_err(update_error)
}

/// The XDP program of a loaded object.
pub(super) fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, BpfError> {
    let missing = BpfError::MissingObject {
        kind: "program",
        name: PROGRAM_NAME,
    };
    let program = ebpf.program_mut(PROGRAM_NAME).ok_or(missing)?;
    program.try_into().map_err(|_| BpfError::MissingObject {
        kind: "XDP program",
        name: PROGRAM_NAME,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_options_filter_by_default() {
        assert!(LoadOptions::default().filter_neighbors);
    }
}
