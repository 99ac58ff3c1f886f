//! The TUN interface of the endpoint (docs/endpoint.md): created with one
//! queue per worker (`IFF_MULTI_QUEUE`), raw IP packets without a packet
//! information header (`IFF_NO_PI`), brought up with its MTU and the node
//! address (`core::address`) with prefix length 8, so the kernel routes
//! all of fd00::/8 (every overlay address) to it.
//!
//! Configured with ioctls on the interface (no netlink): TUNSETIFF per
//! queue, SIOCSIFMTU, SIOCSIFADDR on an AF_INET6 socket, SIOCSIFFLAGS.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

/// Longest interface name the kernel takes (IFNAMSIZ without the NUL).
pub const NAME_MAX: usize = libc::IFNAMSIZ - 1;
/// Most queues of one TUN interface (the kernel's MAX_TAP_QUEUES is 256).
pub const QUEUES_MAX: usize = 256;
/// Smallest MTU of an IPv6 interface (RFC 8200).
pub const MTU_MIN: u32 = 1280;

/// How to create the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunConfig {
    /// Interface name (`xorlay0` by default).
    pub name: String,
    /// Queues: one per worker.
    pub queues: usize,
    /// The interface MTU.
    pub mtu: u32,
    /// This node's overlay address.
    pub address: Ipv6Addr,
    /// Its prefix length: 8 routes every overlay address to the interface.
    pub prefix_len: u8,
}

/// Why the interface could not be created or configured.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// A setting is out of range.
    #[error("{0}")]
    Config(String),
    /// /dev/net/tun could not be opened.
    #[error(
        "cannot open /dev/net/tun: {0}; load the tun module (`modprobe tun`) and run as root \
         (or with CAP_NET_ADMIN)"
    )]
    Open(io::Error),
    /// The kernel refused a step.
    #[error("TUN interface {name}: {step}: {source}{hint}")]
    Step {
        /// The interface.
        name: String,
        /// What was being done.
        step: &'static str,
        /// The kernel's error.
        source: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
}

/// A TUN interface and its queues. Dropping it closes the queues, which
/// removes the interface (it is not persistent).
#[derive(Debug)]
pub struct Tun {
    name: String,
    queues: Vec<File>,
    index: u32,
}

impl TunConfig {
    /// Checks the settings: a valid name, 1 to [`QUEUES_MAX`] queues, an MTU
    /// of at least [`MTU_MIN`].
    pub fn check(&self) -> Result<(), TunError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= NAME_MAX
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !name_ok {
            return Err(TunError::Config(format!(
                "TUN name {:?} must be 1 to {NAME_MAX} letters, digits, '-', '_' or '.'",
                self.name
            )));
        }
        if self.queues == 0 || self.queues > QUEUES_MAX {
            return Err(TunError::Config(format!(
                "TUN queues = {} must be 1 to {QUEUES_MAX}",
                self.queues
            )));
        }
        if self.mtu < MTU_MIN || self.mtu > 65_535 {
            return Err(TunError::Config(format!(
                "TUN MTU {} must be {MTU_MIN} (IPv6's minimum) to 65535",
                self.mtu
            )));
        }
        if self.prefix_len > 128 {
            return Err(TunError::Config(format!(
                "prefix length {} is over 128",
                self.prefix_len
            )));
        }
        Ok(())
    }
}

/// An `ifreq` with `name` in it.
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all zeros is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req
}

impl Tun {
    /// Creates the interface with its queues, MTU and address, and brings
    /// it up.
    pub fn create(config: &TunConfig) -> Result<Tun, TunError> {
        config.check()?;
        let step = |step: &'static str, hint: &'static str| {
            let name = config.name.clone();
            move |source: io::Error| TunError::Step {
                name,
                step,
                source,
                hint,
            }
        };
        let mut queues = Vec::with_capacity(config.queues);
        for _ in 0..config.queues {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
                .open("/dev/net/tun")
                .map_err(TunError::Open)?;
            let mut req = ifreq(&config.name);
            req.ifr_ifru.ifru_flags =
                (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE) as libc::c_short;
            // SAFETY: TUNSETIFF reads an ifreq we own, on a tun fd.
            let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &raw mut req) };
            if rc < 0 {
                return Err(step(
                    "creating the interface (TUNSETIFF)",
                    "; an interface of that name that is not a multi-queue TUN, or one held by \
                     another process, is in the way: pick another name or remove it",
                )(io::Error::last_os_error()));
            }
            queues.push(file);
        }
        let inet = socket(libc::AF_INET).map_err(step("opening a configuration socket", ""))?;
        let inet6 = socket(libc::AF_INET6).map_err(step(
            "opening an IPv6 socket",
            "; is IPv6 disabled (net.ipv6.conf.all.disable_ipv6)?",
        ))?;
        let mut req = ifreq(&config.name);
        req.ifr_ifru.ifru_mtu = config.mtu as libc::c_int;
        // SAFETY: SIOCSIFMTU reads an ifreq we own.
        if unsafe { libc::ioctl(inet.as_raw_fd(), libc::SIOCSIFMTU, &raw mut req) } < 0 {
            return Err(step("setting the MTU", "")(io::Error::last_os_error()));
        }
        let index = interface_index(&config.name).map_err(step("reading its index", ""))?;
        // SAFETY: in6_ifreq is plain data; all zeros is a valid value.
        let mut addr: libc::in6_ifreq = unsafe { std::mem::zeroed() };
        addr.ifr6_addr.s6_addr = config.address.octets();
        addr.ifr6_prefixlen = u32::from(config.prefix_len);
        addr.ifr6_ifindex = index as libc::c_int;
        // SAFETY: SIOCSIFADDR on an AF_INET6 socket reads an in6_ifreq we own.
        if unsafe { libc::ioctl(inet6.as_raw_fd(), libc::SIOCSIFADDR, &raw mut addr) } < 0 {
            return Err(step(
                "adding the overlay address",
                "; is IPv6 disabled on it (net.ipv6.conf.<name>.disable_ipv6)?",
            )(io::Error::last_os_error()));
        }
        let mut req = ifreq(&config.name);
        // SAFETY: SIOCGIFFLAGS writes into an ifreq we own.
        if unsafe { libc::ioctl(inet.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut req) } < 0 {
            return Err(step("reading its flags", "")(io::Error::last_os_error()));
        }
        // SAFETY: the union's flags member was just written by the kernel.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        // SAFETY: SIOCSIFFLAGS reads an ifreq we own.
        if unsafe { libc::ioctl(inet.as_raw_fd(), libc::SIOCSIFFLAGS, &raw mut req) } < 0 {
            return Err(step("bringing it up", "")(io::Error::last_os_error()));
        }
        wait_usable(config.address).map_err(step(
            "waiting for the address to leave the tentative state",
            "; duplicate address detection should not run on a TUN interface: check \
             net.ipv6.conf.<name>.accept_dad",
        ))?;
        Ok(Tun {
            name: config.name.clone(),
            queues,
            index,
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The queues (non-blocking): each reads and writes whole IP packets.
    pub fn queues(&self) -> &[File] {
        &self.queues
    }
}

/// Waits (at most [`USABLE_WAIT`]) until `address` can be bound: the
/// kernel finishes adding an IPv6 address (its duplicate address detection
/// step, skipped on a TUN interface but run from a work queue) a moment
/// after the ioctl returns, and until then sockets cannot use it.
fn wait_usable(address: Ipv6Addr) -> io::Result<()> {
    let deadline = std::time::Instant::now() + USABLE_WAIT;
    loop {
        match std::net::UdpSocket::bind((address, 0)) {
            Ok(_) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
                if std::time::Instant::now() >= deadline {
                    return Err(e);
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// How long [`Tun::create`] waits for its address to become usable.
pub const USABLE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// A datagram socket of `family` for configuration ioctls.
fn socket(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The index of interface `name`.
fn interface_index(name: &str) -> io::Result<u32> {
    let name = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a NUL-terminated name.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        index => Ok(index),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TunConfig {
        TunConfig {
            name: "xorlay0".into(),
            queues: 2,
            mtu: 1400,
            address: "fd00::1".parse().expect("valid"),
            prefix_len: 8,
        }
    }

    #[test]
    fn settings_are_checked_with_the_fix_named() {
        assert!(config().check().is_ok());
        for (bad, want) in [
            (
                TunConfig {
                    name: "a-name-far-too-long".into(),
                    ..config()
                },
                "1 to 15",
            ),
            (
                TunConfig {
                    name: "x/y".into(),
                    ..config()
                },
                "letters",
            ),
            (
                TunConfig {
                    queues: 0,
                    ..config()
                },
                "queues = 0",
            ),
            (
                TunConfig {
                    mtu: 1000,
                    ..config()
                },
                "1280",
            ),
        ] {
            let err = bad.check().expect_err("refused").to_string();
            assert!(err.contains(want), "{err}");
        }
    }
}
