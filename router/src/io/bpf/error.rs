//! [`BpfError`]: what can go wrong loading, attaching and using the XDP
//! program, classified from aya's errors, and the helpers that read the
//! kernel's errno out of an error chain.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use aya::EbpfError;
use aya::programs::ProgramError;

use super::attach::AttachedMode;
use crate::config::RateLimitError;
use crate::io::holder::xdp_link_holders;

/// Errors of loading, attaching and reading the XDP program. Each message
/// says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// A configured interface is not in the caller's network namespace.
    #[error(
        "interface {interface} does not exist in this network namespace; check `interfaces` \
         in the config (`ip link` lists them)"
    )]
    NoSuchInterface {
        /// The interface name as configured.
        interface: String,
    },
    /// This process lacks a capability XDP needs (read from its effective
    /// set before anything is loaded).
    #[error(
        "XDP needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (root has all three); this process \
         ({user}) lacks {missing} (effective set CapEff {effective}): run xorlay as root, or \
         grant all three (systemd: AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_NET_ADMIN; \
         otherwise `setcap cap_bpf,cap_perfmon,cap_net_admin+ep` on the binary)"
    )]
    MissingCapabilities {
        /// The missing capabilities, comma-separated.
        missing: String,
        /// The effective set as read.
        effective: String,
        /// Who runs this process.
        user: String,
    },
    /// The kernel refused for lack of privileges.
    #[error(
        "{action} was refused ({detail}): xorlay needs root or CAP_BPF, CAP_PERFMON and \
         CAP_NET_ADMIN for XDP; run it as root, or grant them (systemd: \
         AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_NET_ADMIN; otherwise \
         `setcap cap_bpf,cap_perfmon,cap_net_admin+ep` on the binary)"
    )]
    PermissionDenied {
        /// What was refused.
        action: &'static str,
        /// The kernel's error.
        detail: String,
    },
    /// The kernel verifier rejected the program.
    #[error(
        "the kernel verifier rejected the XDP program ({detail}); this kernel does not accept \
         ebpf/xorlay.bpf.c as built: report it with the kernel version (`uname -r`) and this \
         verifier log:\n{verifier_log}"
    )]
    Verifier {
        /// The kernel's error.
        detail: String,
        /// The verifier's log.
        verifier_log: String,
    },
    /// The embedded object could not be loaded (maps, BTF, relocations).
    #[error(
        "cannot load the embedded XDP object: {detail}; check that the kernel has BPF and BTF \
         support (`ls /sys/kernel/btf/vmlinux`) and, before Linux 5.11, enough locked memory \
         (`ulimit -l`); rebuild xorlay if the object itself is broken"
    )]
    Object {
        /// The loader's error, with its causes.
        detail: String,
    },
    /// The embedded object lacks a program or map this code expects.
    #[error(
        "the embedded XDP object has no {kind} `{name}`; ebpf/xorlay.bpf.c and \
         router/src/io/bpf/ disagree: rebuild xorlay from one source tree"
    )]
    MissingObject {
        /// "program" or "map".
        kind: &'static str,
        /// Its name.
        name: &'static str,
    },
    /// Native (driver) mode attach failed.
    #[error(
        "cannot attach XDP in native mode to {interface}: {detail}; the driver may not support \
         native XDP: set xdp_mode = \"generic\" or \"auto\" under [underlay] in the config"
    )]
    NativeAttach {
        /// The interface.
        interface: String,
        /// The kernel's error.
        detail: String,
    },
    /// The interface already has an XDP program.
    #[error(
        "cannot attach XDP in {mode} mode to {interface}: {detail}; another XDP program is \
         attached to it (`ip link show {interface}` shows it; `ip link set dev {interface} \
         xdp off` removes it if nothing else needs it)"
    )]
    InterfaceBusy {
        /// The interface.
        interface: String,
        /// "native" or "generic".
        mode: &'static str,
        /// The kernel's error.
        detail: String,
    },
    /// Another xorlay holds the interface's XDP link.
    #[error(
        "XDP on {interface} is held by another xorlay router, {holder}; two routers cannot \
         share an interface: stop that one first (`kill {pid}`, or `systemctl stop xorlay`), \
         or, to replace it without losing packets, give both the same [xdp] pin_dir (a hot \
         restart)"
    )]
    InterfaceHeld {
        /// The interface.
        interface: String,
        /// The holder, "xorlay (pid N)".
        holder: String,
        /// Its pid.
        pid: u32,
    },
    /// Attaching failed otherwise.
    #[error(
        "cannot attach XDP in {mode} mode to {interface}: {detail}; `ip -d link show \
         {interface}` shows the device and any XDP program on it"
    )]
    Attach {
        /// The interface.
        interface: String,
        /// "native" or "generic".
        mode: &'static str,
        /// The kernel's error.
        detail: String,
    },
    /// Reading the stats map failed.
    #[error(
        "cannot read the XDP counters from map `xorlay_stats`: {detail}; the program may have \
         been unloaded, restart xorlay"
    )]
    Counters {
        /// The map error, with its causes.
        detail: String,
    },
    /// Reading or updating the neighbor allowlist failed.
    #[error(
        "cannot {action} the XDP neighbor allowlist (map `xorlay_neighbors`): {detail}; data \
         from neighbors missing in it is dropped until a sync succeeds (each sync starts from \
         the map's actual contents); if this persists, restart xorlay"
    )]
    NeighborMap {
        /// "read", "update" or "open".
        action: &'static str,
        /// The map error, with its causes.
        detail: String,
    },
    /// Reading or updating the route cache or the runtime configuration
    /// failed.
    #[error(
        "cannot {action} the XDP route cache (map `{map}`): {detail}; data packets without a \
         valid entry take the userspace path, so forwarding goes on, slower; if this persists, \
         restart xorlay"
    )]
    RouteCache {
        /// "read", "update" or "open".
        action: &'static str,
        /// `xorlay_routes` or `xorlay_config`.
        map: &'static str,
        /// The map error, with its causes.
        detail: String,
    },
    /// A route the fast path cannot use.
    #[error(
        "cannot install the route via {next_hop} from {local} in the XDP route cache: {reason}"
    )]
    InvalidRoute {
        /// The next hop asked for.
        next_hop: SocketAddr,
        /// The source address asked for.
        local: SocketAddr,
        /// What is wrong with them.
        reason: &'static str,
    },
    /// A rate limit with a rate but no burst.
    #[error(transparent)]
    InvalidRateLimit(#[from] RateLimitError),
    /// An interface could not be added to the egress device map.
    #[error(
        "cannot add {interface} (ifindex {if_index}) to the XDP egress map `xorlay_tx_ports`: \
         {detail}; the fast path cannot redirect to it (such packets take the userspace path)"
    )]
    TxPort {
        /// The interface.
        interface: String,
        /// Its index.
        if_index: u32,
        /// The map error, with its causes.
        detail: String,
    },
    /// The pin directory (`[xdp] pin_dir`) cannot be used.
    #[error("XDP pin directory {path}: {detail}")]
    Pin {
        /// The directory or the entry in it.
        path: PathBuf,
        /// What went wrong and what to do.
        detail: String,
    },
    /// More neighbors than the allowlist holds.
    #[error(
        "{count} neighbors exceed the XDP neighbor allowlist's capacity of {limit} \
         (XORLAY_NEIGHBORS_MAX in ebpf/consts.h); the allowlist was left unchanged: limit the \
         number of sessions below it, or raise XORLAY_NEIGHBORS_MAX and rebuild xorlay"
    )]
    TooManyNeighbors {
        /// Distinct neighbor addresses asked for.
        count: usize,
        /// [`NEIGHBORS_MAX`](super::NEIGHBORS_MAX).
        limit: usize,
    },
}

impl BpfError {
    /// Classifies an error of `EbpfLoader::load` (BTF, maps, relocations).
    pub(super) fn from_object(error: &EbpfError) -> BpfError {
        if chain_errno(error) == Some(libc::EPERM) {
            return BpfError::PermissionDenied {
                action: "creating the XDP program's maps",
                detail: chain(error),
            };
        }
        BpfError::Object {
            detail: chain(error),
        }
    }

    /// Classifies an error of `Xdp::load` (BPF_PROG_LOAD).
    pub(super) fn from_program_load(error: &ProgramError) -> BpfError {
        if chain_errno(error) == Some(libc::EPERM) {
            return BpfError::PermissionDenied {
                action: "loading the XDP program",
                detail: chain(error),
            };
        }
        match error {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => BpfError::Verifier {
                detail: io_error.to_string(),
                verifier_log: verifier_log.to_string(),
            },
            other => BpfError::Object {
                detail: chain(other),
            },
        }
    }

    /// Classifies an error of `Xdp::attach_to_if_index`.
    pub(super) fn from_attach(
        error: &ProgramError,
        interface: &str,
        if_index: u32,
        mode: AttachedMode,
    ) -> BpfError {
        let detail = chain(error);
        let interface = interface.to_string();
        match chain_errno(error) {
            Some(libc::EBUSY | libc::EEXIST) => {
                let holders = xdp_link_holders(if_index);
                if let Some(router) = holders.iter().find(|h| h.is_xorlay()) {
                    return BpfError::InterfaceHeld {
                        interface,
                        holder: router.to_string(),
                        pid: router.pid,
                    };
                }
                BpfError::InterfaceBusy {
                    interface,
                    mode: mode.name(),
                    detail,
                }
            }
            Some(libc::EPERM) => BpfError::PermissionDenied {
                action: "attaching the XDP program",
                detail,
            },
            _ if mode == AttachedMode::Native => BpfError::NativeAttach { interface, detail },
            _ => BpfError::Attach {
                interface,
                mode: mode.name(),
                detail,
            },
        }
    }
}

/// An error and its causes, joined by ": " (aya keeps the kernel's errno in
/// the source chain, not in the top-level message).
pub(super) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The errno of the first `io::Error` in an error's source chain.
pub(super) fn chain_errno(error: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(errno) = e
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            return Some(errno);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_keeps_the_errno() {
        let inner = io::Error::from_raw_os_error(libc::EPERM);
        let outer = aya::programs::ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_prog_load",
            io_error: inner,
        });
        assert_eq!(chain_errno(&outer), Some(libc::EPERM));
        let text = chain(&outer);
        assert!(text.contains("bpf_prog_load"), "{text}");
        assert!(text.contains("os error 1"), "{text}");
    }
}
