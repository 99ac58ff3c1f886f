//! [`XdpRouter::attach_pinned`]: a router that keeps its maps and links in
//! a pin directory, so a new instance takes over a running one (hot restart)
//! or reclaims a crashed one's state; `docs/xdp.md`, "Lifecycle".

use std::path::{Path, PathBuf};

use aya::maps::{Array, MapData};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;

use super::OWNER_MAP_NAME;
use super::abi::Owner;
use super::attach::{AttachedLink, XdpRouter, check_capabilities, resolve_targets};
use super::error::{BpfError, chain};
use super::load::{LoadOptions, load_inner, xdp_program};
use super::neighbors::NeighborMap;
use super::pins::{link_pin_path, prepare_pin_dir, read_owner, remove_pin, survey_pin_dir};
use super::routes::{RouteCache, prune_tx_ports};
use crate::config::XdpAttachMode;

/// The pin directory of a router and what was found in it at start.
#[derive(Debug)]
pub(super) struct Pins {
    pub(super) dir: PathBuf,
    pub(super) start: PinnedStart,
    /// This process, as written to the owner record.
    pub(super) me: Owner,
    /// The owner record was written (the pins are ours until another
    /// instance writes its own).
    pub(super) owned: bool,
    /// The directory held no state before this process: on a failed start
    /// everything in it is removed again.
    pub(super) fresh: bool,
}

/// What [`XdpRouter::attach_pinned`] found in its pin directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinnedStart {
    /// No usable state: new maps, pinned now.
    Fresh,
    /// The owner is alive: its maps are reused and the program is swapped
    /// into its links atomically (a hot restart; the owner sees the change
    /// when it exits and leaves everything in place).
    HotRestart {
        /// The previous owner.
        pid: u32,
    },
    /// The owner is gone (crashed or killed): its maps are reused, with the
    /// entries counted here.
    Reclaimed {
        /// The previous owner, if the record was readable.
        pid: Option<u32>,
        /// Route cache entries of the current generation.
        routes: usize,
        /// Allowlisted neighbors.
        neighbors: usize,
    },
}

impl PinnedStart {
    /// Whether state of an earlier instance is in use (the control plane
    /// should start warm, see `ControlIo::warm_start`).
    pub fn is_takeover(&self) -> bool {
        !matches!(self, PinnedStart::Fresh)
    }
}

impl XdpRouter {
    /// [`XdpRouter::attach_with`] keeping its state in `pin_dir` (a
    /// directory on a bpf filesystem, created if missing): the state maps
    /// ([`PINNED_MAPS`](super::PINNED_MAPS)) are pinned there by name, the XDP link of each
    /// interface as `link-<interface>`, and the owner record
    /// (`xorlay_owner`) names this process.
    ///
    /// Pins left by an earlier instance are reused: entries whose layout
    /// differs from this build's, unknown `xorlay_*` or `link-*` entries and
    /// links that are no XDP links are removed first (logged with the
    /// reason); a live owner is taken over (the new program is swapped into
    /// each pinned link atomically with `BPF_LINK_UPDATE`: no packet sees
    /// no program), a dead one's state is reclaimed. [`XdpRouter::pinned_start`]
    /// says which. Entries not made by xorlay are refused, never removed.
    /// The pins become this process's with [`XdpRouter::claim_pins`], to
    /// call once the rest of the router runs.
    pub fn attach_pinned(
        interfaces: &[String],
        port: u16,
        mode: XdpAttachMode,
        options: LoadOptions,
        pin_dir: &Path,
    ) -> Result<XdpRouter, BpfError> {
        let targets = resolve_targets(interfaces)?;
        check_capabilities()?;
        prepare_pin_dir(pin_dir)?;
        let survey = survey_pin_dir(pin_dir)?;
        let previous = survey.owner;
        let maps_present = survey.maps_present;
        let ebpf = load_inner(port, options, Some(pin_dir))?;
        let me = Owner::of_process(std::process::id());
        let start = pinned_start(previous, maps_present, &me);
        let mut router = XdpRouter {
            ebpf,
            attachments: Vec::with_capacity(targets.len()),
            pins: Some(Pins {
                dir: pin_dir.to_path_buf(),
                start,
                me,
                owned: false,
                fresh: !maps_present,
            }),
        };
        router.count_reclaimed()?;
        for (interface, if_index) in &targets {
            router.attach_pinned_one(interface, *if_index, mode, pin_dir)?;
        }
        let keep: Vec<u32> = targets.iter().map(|&(_, if_index)| if_index).collect();
        prune_tx_ports(&mut router.ebpf, &keep);
        remove_stale_links(pin_dir, survey.links, &targets);
        if let Some(pins) = &router.pins {
            log_pinned_start(&pins.start, pin_dir, me.pid);
        }
        Ok(router)
    }

    /// Makes this process the owner of the pins (writes the owner record):
    /// call it once everything else runs. From then on the previous owner
    /// leaves the pins alone at exit, and this router removes them at its
    /// own exit unless another instance claims them. Until then, dropping
    /// this router leaves the pins as found (links keep the program swapped
    /// in), or removes them if it created them. Nothing without a pin
    /// directory.
    pub fn claim_pins(&mut self) -> Result<(), BpfError> {
        self.write_owner()
    }

    /// What was found in the pin directory at start; `None` without one.
    pub fn pinned_start(&self) -> Option<&PinnedStart> {
        self.pins.as_ref().map(|p| &p.start)
    }

    /// Whether another instance has taken over this router's pins (its
    /// owner record names another process): on exit this router then
    /// leaves links and pins alone. `false` without a pin directory.
    pub fn taken_over(&self) -> bool {
        let Some(pins) = &self.pins else {
            return false;
        };
        pins.owned && read_owner(&pins.dir).is_some_and(|owner| owner != pins.me)
    }

    fn count_reclaimed(&mut self) -> Result<(), BpfError> {
        let Some(pins) = &self.pins else {
            return Ok(());
        };
        if !matches!(pins.start, PinnedStart::Reclaimed { .. }) {
            return Ok(());
        }
        let dir = pins.dir.clone();
        let cache = RouteCache::open_pinned(&dir)?;
        let routes = cache.count_generation(cache.generation())?;
        let neighbors = NeighborMap::open_pinned(&dir)?.keys()?.len();
        if let Some(Pins {
            start:
                PinnedStart::Reclaimed {
                    routes: r,
                    neighbors: n,
                    ..
                },
            ..
        }) = &mut self.pins
        {
            *r = routes;
            *n = neighbors;
        }
        Ok(())
    }

    fn write_owner(&mut self) -> Result<(), BpfError> {
        let Some(pins) = &mut self.pins else {
            return Ok(());
        };
        let error = |e: &dyn std::error::Error| BpfError::Pin {
            path: pins.dir.join(OWNER_MAP_NAME),
            detail: format!("cannot write the owner record: {}", chain(e)),
        };
        let map = self
            .ebpf
            .map_mut(OWNER_MAP_NAME)
            .ok_or(BpfError::MissingObject {
                kind: "map",
                name: OWNER_MAP_NAME,
            })?;
        let mut owner: Array<&mut MapData, Owner> = Array::try_from(map).map_err(|e| error(&e))?;
        owner.set(0, pins.me, 0).map_err(|e| error(&e))?;
        pins.owned = true;
        Ok(())
    }

    /// Attaches to `interface` through its pinned link (swapping this
    /// program in), or attaches anew and pins the link.
    fn attach_pinned_one(
        &mut self,
        interface: &str,
        if_index: u32,
        mode: XdpAttachMode,
        pin_dir: &Path,
    ) -> Result<(), BpfError> {
        let path = link_pin_path(pin_dir, interface);
        if path.exists() {
            match self.update_pinned_link(&path) {
                Ok(link) => {
                    log::info!(
                        "XDP on {interface}: program replaced in the pinned link {}",
                        path.display()
                    );
                    return self.finish_attach(
                        interface,
                        if_index,
                        "inherited",
                        AttachedLink::Pinned(link),
                    );
                }
                Err(detail) => {
                    log::warn!(
                        "XDP on {interface}: the pinned link {} cannot take the new program \
                         ({detail}); removing it and attaching anew",
                        path.display()
                    );
                    remove_pin(&path);
                }
            }
        }
        let (id, attached) = self.attach_new(interface, if_index, mode)?;
        let pin_error = |detail: String| BpfError::Pin {
            path: path.clone(),
            detail: format!("cannot pin the XDP link of {interface}: {detail}"),
        };
        let program = xdp_program(&mut self.ebpf)?;
        let link = program.take_link(id).map_err(|e| pin_error(chain(&e)))?;
        let link = FdLink::try_from(link).map_err(|e| {
            pin_error(format!(
                "{}; the kernel attached it through netlink, which cannot be pinned (Linux 5.9+ \
                 makes bpf links); remove pin_dir from [xdp] to run without pinning",
                chain(&e)
            ))
        })?;
        let pinned = link.pin(&path).map_err(|e| pin_error(chain(&e)))?;
        self.finish_attach(
            interface,
            if_index,
            attached.name(),
            AttachedLink::Pinned(FdLink::from(pinned)),
        )
    }

    /// Swaps this program into the pinned link at `path`.
    fn update_pinned_link(&mut self, path: &Path) -> Result<FdLink, String> {
        let pinned = PinnedLink::from_pin(path).map_err(|e| chain(&e))?;
        let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| chain(&e))?;
        let program = xdp_program(&mut self.ebpf).map_err(|e| e.to_string())?;
        let id = program.attach_to_link(link).map_err(|e| chain(&e))?;
        let link = program.take_link(id).map_err(|e| chain(&e))?;
        FdLink::try_from(link).map_err(|e| chain(&e))
    }
}

/// How this instance starts on the pins `survey_pin_dir` found.
fn pinned_start(previous: Option<Owner>, maps_present: bool, me: &Owner) -> PinnedStart {
    match previous {
        _ if !maps_present => PinnedStart::Fresh,
        Some(owner) if owner.pid != me.pid && owner.is_alive() => {
            PinnedStart::HotRestart { pid: owner.pid }
        }
        owner => PinnedStart::Reclaimed {
            pid: owner.map(|o| o.pid).filter(|&pid| pid != 0),
            routes: 0,
            neighbors: 0,
        },
    }
}

/// Removes the pinned links of interfaces no longer in `targets`.
fn remove_stale_links(pin_dir: &Path, pinned: Vec<String>, targets: &[(&str, u32)]) {
    for stale in pinned {
        if targets.iter().all(|(interface, _)| *interface != stale) {
            let path = link_pin_path(pin_dir, &stale);
            log::info!(
                "removing the pinned XDP link of {stale} ({}): not in `interfaces` any more",
                path.display()
            );
            remove_pin(&path);
        }
    }
}

/// Says how the pinned state was found.
fn log_pinned_start(start: &PinnedStart, pin_dir: &Path, me: u32) {
    match start {
        PinnedStart::Fresh => log::info!(
            "XDP state pinned in {} (owner: pid {me})",
            pin_dir.display()
        ),
        PinnedStart::HotRestart { pid } => {
            log::info!("hot restart: taking over XDP from pid {pid}")
        }
        PinnedStart::Reclaimed {
            pid,
            routes,
            neighbors,
        } => log::warn!(
            "reclaiming pinned XDP state left by {} (crashed): keeping {routes} cached \
             routes and {neighbors} neighbors until the control plane has re-established \
             its sessions",
            pid.map_or_else(|| "an unknown process".to_string(), |p| format!("pid {p}"))
        ),
    }
}
