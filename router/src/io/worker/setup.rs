//! Setting a worker up: its settings and their limits, the errors that
//! name the fix, the socket, the ring and the thread's nice value.

use std::io;
use std::net::SocketAddr;

use io_uring::IoUring;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::BUF_GROUP;
use super::pool::BufRing;
use crate::config::{Dataplane, SettingError};

/// Settings of one worker: `underlay.listen` and the `[dataplane]`
/// settings, as the config defines, defaults and checks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Address to bind, e.g. `[::]:4799` (dual-stack) or `0.0.0.0:4799`.
    pub listen: SocketAddr,
    /// The data-plane settings (`dataplane.workers` is the router's).
    pub dataplane: Dataplane,
}

impl WorkerConfig {
    /// A worker bound to `listen` with `dataplane` settings.
    pub fn new(listen: SocketAddr, dataplane: Dataplane) -> WorkerConfig {
        WorkerConfig { listen, dataplane }
    }

    /// Checks every limit the worker relies on ([`Dataplane::check`]).
    /// Messages name the key.
    pub fn validate(&self) -> Result<(), WorkerError> {
        Ok(self.dataplane.check(self.listen)?)
    }

    /// Completion queue entries: room for one completion per buffer (a
    /// receive or a send, never both at once), twice over, so the CQ does
    /// not overflow.
    pub(super) fn cq_entries(&self) -> u32 {
        let d = &self.dataplane;
        (2 * d.ring_entries).max(2 * u32::from(d.buffer_count))
    }
}

/// Why a worker could not start or stopped with an error. Each message says
/// what to change.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A setting out of range.
    #[error(transparent)]
    Config(#[from] SettingError),
    /// Another socket holds the port without `SO_REUSEPORT`.
    #[error(
        "cannot bind UDP {listen}: port {port} is already in use by a socket without SO_REUSEPORT (or of another user); choose a free port in `underlay.listen` or stop the program holding it (`ss -ulpn 'sport = :{port}'`)"
    )]
    AddressInUse {
        /// The address.
        listen: SocketAddr,
        /// Its port.
        port: u16,
    },
    /// The IP is not one of this host's.
    #[error(
        "cannot bind UDP {listen}: it is not an address of this host; set `underlay.listen` to a local address or to [::] / 0.0.0.0"
    )]
    AddressUnavailable {
        /// The address.
        listen: SocketAddr,
    },
    /// Any other socket failure.
    #[error(
        "cannot set up the UDP socket for {listen} ({step}): {source}; check `underlay.listen`"
    )]
    Socket {
        /// The address.
        listen: SocketAddr,
        /// What was being done.
        step: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The kernel has no io_uring.
    #[error(
        "io_uring is not supported by this kernel ({source}); xorlay needs Linux 6.0 or later built with CONFIG_IO_URING"
    )]
    RingUnsupported {
        /// The OS error.
        source: io::Error,
    },
    /// io_uring exists but is forbidden.
    #[error(
        "io_uring is not permitted ({source}): set sysctl kernel.io_uring_disabled=0 (or add this user to kernel.io_uring_group), and allow io_uring_setup/io_uring_enter/io_uring_register in the seccomp profile of the container or systemd unit"
    )]
    RingDenied {
        /// The OS error.
        source: io::Error,
    },
    /// io_uring setup failed for another reason.
    #[error(
        "cannot create an io_uring of {entries} entries: {source}; lower dataplane.ring_entries or dataplane.buffer_count, or raise RLIMIT_MEMLOCK (`ulimit -l`)"
    )]
    Ring {
        /// Submission queue entries asked for.
        entries: u32,
        /// The OS error.
        source: io::Error,
    },
    /// The provided-buffer ring was refused.
    #[error(
        "cannot register a provided-buffer ring of {count} buffers: {source}; xorlay needs Linux 6.0 or later (multishot recvmsg, buffer rings); lower dataplane.buffer_count if the size is refused"
    )]
    BufferRing {
        /// Buffers asked for.
        count: u16,
        /// The OS error.
        source: io::Error,
    },
    /// Receive buffers could not be mapped.
    #[error(
        "cannot map {bytes} bytes of receive buffers: {source}; lower dataplane.buffer_count or dataplane.buffer_size"
    )]
    Memory {
        /// Bytes asked for.
        bytes: usize,
        /// The OS error.
        source: io::Error,
    },
    /// The thread could not be started.
    #[error(
        "cannot start thread xorlay-worker-{index}: {source}; raise the thread limit (`ulimit -u`) or lower dataplane.workers"
    )]
    Thread {
        /// Worker index.
        index: usize,
        /// The OS error.
        source: io::Error,
    },
    /// The ring failed while running.
    #[error(
        "worker {index}: {what} failed: {source}; the worker stopped, restart the router (and report it if it repeats)"
    )]
    Io {
        /// Worker index.
        index: usize,
        /// What failed.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// Cancelled operations did not complete in time.
    #[error(
        "worker {index}: {pending} I/O operations were still pending {timeout_ms} ms after cancellation; their buffers were leaked to stay memory-safe (restart the process to reclaim them)"
    )]
    Drain {
        /// Worker index.
        index: usize,
        /// Operations still in flight.
        pending: u32,
        /// How long was waited.
        timeout_ms: u128,
    },
    /// The thread panicked: a bug.
    #[error("worker {index} panicked; this is a bug, please report it with the log")]
    Panicked {
        /// Worker index.
        index: usize,
    },
}

/// Sets the calling thread's nice value (Linux applies PRIO_PROCESS to a
/// thread ID, not to the whole process).
pub(super) fn set_thread_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let who = libc::id_t::try_from(tid).map_err(|_| std::io::Error::other("negative thread ID"))?;
    // SAFETY: setpriority takes plain integers.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, who, nice) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The calling thread's nice value (None if it cannot be read).
pub(super) fn thread_nice() -> Option<i32> {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let who = libc::id_t::try_from(tid).ok()?;
    // getpriority returns the nice value; -1 is also its error value, so
    // errno tells them apart.
    // SAFETY: __errno_location returns this thread's errno.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: getpriority takes plain integers.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, who) };
    // SAFETY: as above.
    (nice != -1 || unsafe { *libc::__errno_location() } == 0).then_some(nice)
}

/// The error to report for a failed `io_uring_setup`.
fn ring_error(source: io::Error, entries: u32) -> WorkerError {
    match source.raw_os_error() {
        Some(libc::ENOSYS) => WorkerError::RingUnsupported { source },
        Some(libc::EPERM) | Some(libc::EACCES) => WorkerError::RingDenied { source },
        _ => WorkerError::Ring { entries, source },
    }
}

/// The error to report for a failed `bind`.
fn bind_error(source: io::Error, listen: SocketAddr) -> WorkerError {
    match source.raw_os_error() {
        Some(libc::EADDRINUSE) => WorkerError::AddressInUse {
            listen,
            port: listen.port(),
        },
        Some(libc::EADDRNOTAVAIL) => WorkerError::AddressUnavailable { listen },
        _ => WorkerError::Socket {
            listen,
            step: "bind",
            source,
        },
    }
}

/// Sets a socket buffer size, forced past the sysctl cap when permitted.
fn set_buffer_size(socket: &Socket, force_opt: libc::c_int, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes / 2).unwrap_or(libc::c_int::MAX);
    let fd = std::os::fd::AsRawFd::as_raw_fd(socket);
    // SAFETY: `fd` is an open socket owned by `socket`; the option value is a
    // c_int on the stack and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            force_opt,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EPERM) {
        return Err(err);
    }
    // Not root: the plain option, capped by net.core.{r,w}mem_max.
    if force_opt == libc::SO_RCVBUFFORCE {
        socket.set_recv_buffer_size(bytes / 2)
    } else {
        socket.set_send_buffer_size(bytes / 2)
    }
}

pub(super) fn open_socket(config: &WorkerConfig) -> Result<Socket, WorkerError> {
    let listen = config.listen;
    let fail = |step: &'static str| {
        move |source| WorkerError::Socket {
            listen,
            step,
            source,
        }
    };
    let socket = Socket::new(
        Domain::for_address(listen),
        Type::DGRAM,
        Some(Protocol::UDP),
    )
    .map_err(fail("socket"))?;
    socket.set_reuse_port(true).map_err(fail("SO_REUSEPORT"))?;
    if listen.is_ipv6() {
        socket.set_only_v6(false).map_err(fail("IPV6_V6ONLY"))?;
    }
    // The kernel doubles the value it is given; halve it so the socket
    // gets what the config says.
    set_buffer_size(
        &socket,
        libc::SO_RCVBUFFORCE,
        config.dataplane.recv_buffer_bytes,
    )
    .map_err(fail("SO_RCVBUF"))?;
    set_buffer_size(
        &socket,
        libc::SO_SNDBUFFORCE,
        config.dataplane.recv_buffer_bytes,
    )
    .map_err(fail("SO_SNDBUF"))?;
    socket
        .bind(&SockAddr::from(listen))
        .map_err(|source| bind_error(source, listen))?;
    Ok(socket)
}

pub(super) fn open_ring(config: &WorkerConfig) -> Result<IoUring, WorkerError> {
    let entries = config.dataplane.ring_entries;
    let build = |defer: bool| {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(config.cq_entries()).setup_submit_all();
        if defer {
            // Completion work runs only when this thread enters the kernel
            // to wait: no interrupts mid-batch.
            builder.setup_single_issuer().setup_defer_taskrun();
        }
        builder.build(entries)
    };
    match build(true) {
        Ok(ring) => Ok(ring),
        // Kernels before 6.1 lack DEFER_TASKRUN.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            build(false).map_err(|source| ring_error(source, entries))
        }
        Err(source) => Err(ring_error(source, entries)),
    }
}

/// Maps the receive buffers and registers them as the ring's
/// provided-buffer group.
pub(super) fn open_buffers(config: &WorkerConfig, ring: &IoUring) -> Result<BufRing, WorkerError> {
    let memory = |source| WorkerError::Memory {
        bytes: BufRing::bytes(config.dataplane.buffer_count, config.dataplane.buffer_size),
        source,
    };
    let mut bufs = BufRing::new(config.dataplane.buffer_count, config.dataplane.buffer_size)
        .map_err(memory)?;
    bufs.register(&ring.submitter(), BUF_GROUP)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ENOMEM) => memory(source),
            _ => WorkerError::BufferRing {
                count: config.dataplane.buffer_count,
                source,
            },
        })?;
    Ok(bufs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::worker::PAYLOAD_OFFSET;

    #[test]
    fn default_config_is_valid_and_bounds_are_enforced() {
        let listen: SocketAddr = "[::]:4799".parse().expect("literal");
        let config = WorkerConfig::new(listen, Dataplane::default());
        config.validate().expect("defaults are valid");
        assert_eq!(config.cq_entries(), 8192);
        assert!(PAYLOAD_OFFSET + 1500 <= config.dataplane.buffer_size as usize);
        let with = |dataplane: Dataplane| WorkerConfig::new(listen, dataplane);
        let d = Dataplane::default();
        let cases = [
            (
                with(Dataplane {
                    buffer_count: 1000,
                    ..d.clone()
                }),
                "buffer_count",
            ),
            (
                with(Dataplane {
                    buffer_count: 0,
                    ..d.clone()
                }),
                "buffer_count",
            ),
            (
                with(Dataplane {
                    buffer_size: 100,
                    ..d.clone()
                }),
                "buffer_size",
            ),
            (
                with(Dataplane {
                    ring_entries: 1000,
                    ..d.clone()
                }),
                "ring_entries",
            ),
            (
                with(Dataplane {
                    ring_entries: 4,
                    ..d.clone()
                }),
                "ring_entries",
            ),
            (
                WorkerConfig::new(
                    "0.0.0.0:1".parse().expect("literal"),
                    Dataplane {
                        app: Some("[::1]:2".parse().expect("literal")),
                        ..d.clone()
                    },
                ),
                "app",
            ),
        ];
        for (bad, key) in cases {
            let message = bad.validate().expect_err(key).to_string();
            assert!(message.contains(&format!("dataplane.{key}")), "{message}");
        }
    }

    #[test]
    fn setup_errors_name_the_fix() {
        let listen: SocketAddr = "0.0.0.0:4799".parse().expect("literal");
        let in_use = bind_error(io::Error::from_raw_os_error(libc::EADDRINUSE), listen).to_string();
        assert!(
            in_use.contains("port 4799") && in_use.contains("underlay.listen"),
            "{in_use}"
        );
        let unavailable =
            bind_error(io::Error::from_raw_os_error(libc::EADDRNOTAVAIL), listen).to_string();
        assert!(unavailable.contains("underlay.listen"), "{unavailable}");
        let denied = ring_error(io::Error::from_raw_os_error(libc::EPERM), 1024).to_string();
        assert!(denied.contains("kernel.io_uring_disabled"), "{denied}");
        let missing = ring_error(io::Error::from_raw_os_error(libc::ENOSYS), 1024).to_string();
        assert!(missing.contains("not supported"), "{missing}");
        let other = ring_error(io::Error::from_raw_os_error(libc::ENOMEM), 1024).to_string();
        assert!(other.contains("ring_entries"), "{other}");
    }
}
