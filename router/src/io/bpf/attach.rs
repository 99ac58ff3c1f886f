//! [`XdpRouter`]: a loaded program attached to the underlay interfaces,
//! detached again when dropped; the attach modes and the checks before an
//! attach (capabilities, interface names, forwarding sysctls).

use std::ffi::CString;

use aya::Ebpf;
use aya::programs::links::FdLink;
use aya::programs::xdp::XdpLinkId;
use aya::programs::{Xdp, XdpMode};

use super::counters::{XdpCounters, read_counters};
use super::error::{BpfError, chain};
use super::load::{LoadOptions, load_with, xdp_program};
use super::neighbors::{NeighborMap, take_neighbor_map};
use super::pins::{link_pin_path, read_owner, remove_pin, remove_pin_dir};
use super::routes::{RouteCache, add_tx_port, take_route_cache};
use super::shed::{ShedBudget, take_shed_budget};
use super::takeover::Pins;
use crate::config::XdpAttachMode;
use crate::io::privilege::{CapSet, whoami};

/// The mode an attachment actually got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AttachedMode {
    Native,
    Generic,
}

impl AttachedMode {
    pub(super) const fn name(self) -> &'static str {
        match self {
            AttachedMode::Native => "native",
            AttachedMode::Generic => "generic",
        }
    }

    const fn aya(self) -> XdpMode {
        match self {
            AttachedMode::Native => XdpMode::Driver,
            AttachedMode::Generic => XdpMode::Skb,
        }
    }
}

/// The loaded XDP program and its attachments. Dropping it (or
/// [`XdpRouter::detach`]) detaches the program from every interface; with a
/// pin directory ([`XdpRouter::attach_pinned`]) only while this process
/// still owns the pins (then it also removes them), see `docs/xdp.md`,
/// "Lifecycle".
#[derive(Debug)]
pub struct XdpRouter {
    pub(super) ebpf: Ebpf,
    pub(super) attachments: Vec<Attachment>,
    pub(super) pins: Option<Pins>,
}

#[derive(Debug)]
pub(super) struct Attachment {
    pub(super) interface: String,
    /// "native", "generic", or "inherited" (a pinned link taken over: its
    /// mode is the one it was created with).
    pub(super) mode: &'static str,
    pub(super) link: AttachedLink,
}

#[derive(Debug)]
pub(super) enum AttachedLink {
    /// Held by the program object (no pin directory).
    Managed(XdpLinkId),
    /// Pinned as `<pin_dir>/link-<interface>`: stays attached after this
    /// process until the pin is removed.
    Pinned(FdLink),
}

impl XdpRouter {
    /// Loads the program for overlay port `port`, the neighbor filter on,
    /// and attaches it to every interface of `interfaces` (names resolved in
    /// the calling thread's network namespace) in `mode`. All interfaces are
    /// checked before anything is loaded; an interface listed twice is
    /// attached once; if one attach fails, those already made are undone.
    ///
    /// The allowlist starts empty: no data packet passes XDP until it is
    /// filled through [`XdpRouter::take_neighbor_map`]. Every attached
    /// interface is also added to the egress device map, so the fast path
    /// can redirect between them; the route cache stays off until the local
    /// ID is set through [`XdpRouter::take_route_cache`].
    pub fn attach(
        interfaces: &[String],
        port: u16,
        mode: XdpAttachMode,
    ) -> Result<XdpRouter, BpfError> {
        XdpRouter::attach_with(interfaces, port, mode, LoadOptions::default())
    }

    /// [`XdpRouter::attach`] with load options (the neighbor filter off, for
    /// debugging).
    pub fn attach_with(
        interfaces: &[String],
        port: u16,
        mode: XdpAttachMode,
        options: LoadOptions,
    ) -> Result<XdpRouter, BpfError> {
        let targets = resolve_targets(interfaces)?;
        check_capabilities()?;
        let ebpf = load_with(port, options)?;
        let mut router = XdpRouter {
            ebpf,
            attachments: Vec::with_capacity(targets.len()),
            pins: None,
        };
        for (interface, if_index) in targets {
            router.attach_one(interface, if_index, mode)?;
        }
        Ok(router)
    }

    fn attach_one(
        &mut self,
        interface: &str,
        if_index: u32,
        mode: XdpAttachMode,
    ) -> Result<(), BpfError> {
        let (link, attached) = self.attach_new(interface, if_index, mode)?;
        self.finish_attach(
            interface,
            if_index,
            attached.name(),
            AttachedLink::Managed(link),
        )
    }

    pub(super) fn attach_new(
        &mut self,
        interface: &str,
        if_index: u32,
        mode: XdpAttachMode,
    ) -> Result<(XdpLinkId, AttachedMode), BpfError> {
        let program = xdp_program(&mut self.ebpf)?;
        let attempt = |program: &mut Xdp, mode: AttachedMode| {
            program
                .attach_to_if_index(if_index, mode.aya())
                .map(|link| (link, mode))
                .map_err(|e| BpfError::from_attach(&e, interface, if_index, mode))
        };
        let done = match mode {
            XdpAttachMode::Native => attempt(program, AttachedMode::Native)?,
            XdpAttachMode::Generic => attempt(program, AttachedMode::Generic)?,
            XdpAttachMode::Auto => match attempt(program, AttachedMode::Native) {
                Ok(done) => done,
                Err(BpfError::NativeAttach { detail, .. }) => {
                    log::warn!(
                        "XDP on {interface}: native mode failed ({detail}); \
                         falling back to generic mode (slower)"
                    );
                    attempt(program, AttachedMode::Generic)?
                }
                // No privileges, or another program already there: generic
                // mode would fail the same way.
                Err(error) => return Err(error),
            },
        };
        log::info!("XDP attached to {interface} in {} mode", done.1.name());
        Ok(done)
    }

    pub(super) fn finish_attach(
        &mut self,
        interface: &str,
        if_index: u32,
        mode: &'static str,
        link: AttachedLink,
    ) -> Result<(), BpfError> {
        warn_without_forwarding(interface);
        self.attachments.push(Attachment {
            interface: interface.to_string(),
            mode,
            link,
        });
        add_tx_port(&mut self.ebpf, if_index).map_err(|error| match error {
            BpfError::TxPort {
                if_index, detail, ..
            } => BpfError::TxPort {
                interface: interface.to_string(),
                if_index,
                detail,
            },
            other => other,
        })
    }

    /// Every interface the program is attached to, with its mode ("native",
    /// "generic", or "inherited" for a pinned link taken over).
    pub fn attached(&self) -> Vec<(String, &'static str)> {
        self.attachments
            .iter()
            .map(|a| (a.interface.clone(), a.mode))
            .collect()
    }

    /// The counters, summed over the CPUs.
    pub fn counters(&self) -> Result<XdpCounters, BpfError> {
        read_counters(&self.ebpf)
    }

    /// The loaded object, for map access.
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// Takes the neighbor allowlist out of the loaded object, for the control
    /// thread to own (see [`NeighborMap`]); `None` once taken. The map stays
    /// in use by the program. (A map of the wrong type, which only a build
    /// mixing sources could give, is logged and also gives `None`.)
    pub fn take_neighbor_map(&mut self) -> Option<NeighborMap> {
        match take_neighbor_map(&mut self.ebpf) {
            Ok(map) => Some(map),
            Err(BpfError::MissingObject { .. }) => None,
            Err(error) => {
                log::error!("{error}");
                None
            }
        }
    }

    /// Takes the handle of the workers' shedding budget (map `xorlay_shed`);
    /// `None` if the object has no such map or it cannot be opened (logged).
    pub fn take_shed_budget(&mut self) -> Option<ShedBudget> {
        match take_shed_budget(&mut self.ebpf) {
            Ok(map) => Some(map),
            Err(BpfError::MissingObject { .. }) => None,
            Err(error) => {
                log::error!("{error}");
                None
            }
        }
    }

    /// Takes the workers' backlog flags (`xorlay_backlog`), mapped into
    /// memory; `None` (logged) if that fails.
    pub fn take_backlog(&mut self) -> Option<crate::io::backlog::BacklogMap> {
        match crate::io::backlog::BacklogMap::take(&mut self.ebpf) {
            Ok(map) => map,
            Err(error) => {
                log::warn!(
                    "load shedding by queue is off: {error}; the shedding budget still applies"
                );
                None
            }
        }
    }

    /// Takes the route cache and the runtime configuration out of the loaded
    /// object, for the control thread to own (see [`RouteCache`]); `None`
    /// once taken. (A map of the wrong type, which only a build mixing
    /// sources could give, is logged and also gives `None`.)
    pub fn take_route_cache(&mut self) -> Option<RouteCache> {
        match take_route_cache(&mut self.ebpf) {
            Ok(cache) => Some(cache),
            Err(BpfError::MissingObject { .. }) => None,
            Err(error) => {
                log::error!("{error}");
                None
            }
        }
    }

    /// Detaches the program from every interface and unloads it. Failures
    /// are logged (there is nothing else to do about them at shutdown).
    pub fn detach(self) {
        drop(self);
    }

    fn detach_all(&mut self) {
        let pins = self.pins.take();
        // With pins, links and maps are left alone unless this process owns
        // them (or made them and failed to start).
        let release = match &pins {
            None => true,
            Some(pins) if pins.owned => match read_owner(&pins.dir) {
                Some(owner) if owner == pins.me => true,
                Some(owner) => {
                    log::info!(
                        "XDP was taken over by pid {}: leaving its links and the pins in {} in \
                         place",
                        owner.pid,
                        pins.dir.display()
                    );
                    false
                }
                None => {
                    log::warn!(
                        "the owner record in {} is gone or unreadable: leaving the pins in place",
                        pins.dir.display()
                    );
                    false
                }
            },
            Some(pins) => pins.fresh,
        };
        let attachments: Vec<Attachment> = self.attachments.drain(..).collect();
        let mut managed = Vec::new();
        for attachment in attachments {
            match attachment.link {
                AttachedLink::Managed(id) => managed.push((attachment.interface, id)),
                AttachedLink::Pinned(link) => {
                    if release && let Some(pins) = &pins {
                        remove_pin(&link_pin_path(&pins.dir, &attachment.interface));
                        // Closing the last descriptor destroys the link.
                        drop(link);
                        log::info!("XDP detached from {}", attachment.interface);
                    }
                }
            }
        }
        if release && let Some(pins) = &pins {
            remove_pin_dir(&pins.dir);
        }
        if managed.is_empty() {
            return;
        }
        let program = match xdp_program(&mut self.ebpf) {
            Ok(program) => program,
            Err(error) => {
                // Cannot happen for an attached router; dropping `ebpf` still
                // detaches every link aya holds.
                log::warn!("detaching XDP: {error}");
                return;
            }
        };
        for (interface, link) in managed {
            match program.detach(link) {
                Ok(()) => log::info!("XDP detached from {interface}"),
                Err(error) => log::warn!(
                    "detaching XDP from {}: {}; `ip link set dev {} xdp off` removes it",
                    interface,
                    chain(&error),
                    interface
                ),
            }
        }
    }
}

impl Drop for XdpRouter {
    fn drop(&mut self) {
        self.detach_all();
    }
}

// The router moves to whichever thread owns the data plane.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<XdpRouter>();
};

/// Fails, naming them, if this process lacks a capability that loading or
/// attaching XDP needs. An unreadable effective set checks nothing (the
/// kernel's own error then speaks).
pub fn check_capabilities() -> Result<(), BpfError> {
    let Some(effective) = CapSet::effective() else {
        return Ok(());
    };
    let missing = effective.missing_for_xdp();
    if missing.is_empty() {
        return Ok(());
    }
    Err(BpfError::MissingCapabilities {
        missing: missing.join(", "),
        effective: effective.to_string(),
        user: whoami(),
    })
}

/// Resolves interface names to indexes (in the calling thread's network
/// namespace), each index once.
pub(super) fn resolve_targets(interfaces: &[String]) -> Result<Vec<(&str, u32)>, BpfError> {
    let mut targets: Vec<(&str, u32)> = Vec::with_capacity(interfaces.len());
    for interface in interfaces {
        let if_index = if_index(interface)?;
        if targets.iter().all(|&(_, seen)| seen != if_index) {
            targets.push((interface, if_index));
        }
    }
    Ok(targets)
}

/// Logs a warning if IPv4 or IPv6 forwarding is off on `interface`: the
/// kernel's FIB lookup (`bpf_fib_lookup`) then refuses every packet arriving
/// on it, so the fast path never forwards from it (counted as
/// `pass_unresolved`; the workers forward instead).
pub(super) fn warn_without_forwarding(interface: &str) {
    for family in ["ipv4", "ipv6"] {
        let path = format!("/proc/sys/net/{family}/conf/{interface}/forwarding");
        if let Ok(text) = std::fs::read_to_string(&path)
            && text.trim() == "0"
        {
            log::warn!(
                "{family} forwarding is off on {interface}: the XDP fast path cannot forward \
                 {family} packets arriving on it (they take the userspace path); enable it with \
                 `sysctl -w net.{family}.conf.{interface}.forwarding=1` (for IPv6 this also \
                 stops accepting router advertisements on it unless accept_ra = 2)"
            );
        }
    }
}

/// The index of `interface` in the calling thread's network namespace.
pub(crate) fn if_index(interface: &str) -> Result<u32, BpfError> {
    let missing = || BpfError::NoSuchInterface {
        interface: interface.to_string(),
    };
    let name = CString::new(interface).map_err(|_| missing())?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        Err(missing())
    } else {
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_interface_is_named() {
        let error = if_index("xlt-no-such0").err();
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("interface xlt-no-such0 does not exist"),
            "{message}"
        );
        assert!(if_index("bad\0name").is_err());
    }
}
