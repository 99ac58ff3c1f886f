//! The data-plane worker: one thread with its own `SO_REUSEPORT` UDP socket,
//! io_uring and pool of receive buffers, all allocated at start-up.
//!
//! One multishot `IORING_OP_RECVMSG` receives every datagram into a buffer
//! the kernel picks from a provided-buffer ring. For each completion the
//! worker parses the overlay header in place (`wire`), asks
//! `core::forward::Forwarder` what to do, and then either gives the buffer back
//! to the ring (drop, or deliver without `app`) or sends the datagram
//! from that same buffer (forward, after decrementing the hop limit in
//! place; deliver to `app`). Forwards wait for the end of the batch, where
//! those to one next hop with one length leave as a single UDP GSO send
//! (`gso`); the rest go one datagram per send. A send's completion gives
//! its buffers back. Sends queued while draining a batch of completions are
//! submitted together by the next `io_uring_enter`, which also waits for
//! the next batch. See `pool` for who owns a buffer when.
//!
//! The wait has a timeout ([`WAIT_SLICE`]), so the worker notices `stop`
//! without traffic and never spins when idle. On stop it cancels everything
//! in flight, drains the completions, unregisters the buffer ring and frees
//! its memory; memory the kernel might still touch is leaked rather than
//! freed if draining fails.
//!
//! Counters are summed locally and published after every batch, so
//! `rx_packets` always equals the sum of the outcomes (`delivered`,
//! `forwarded` and every `drop_*`) in a published snapshot. `forwarded`
//! counts datagrams handed to the kernel; `tx_errors` counts those sends
//! (forwards and deliveries) that the kernel then failed.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use io_uring::types::{CancelBuilder, SubmitArgs, Timespec};
use io_uring::{IoUring, SubmissionQueue, Submitter, cqueue, opcode, squeue, types};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::core::shed::{CreditConfig, Credits};
use crate::core::topology::{Topology, socket_form};
use crate::core::{Action, DropReason, Forwarder, Header, Install, NodeId, Origin};
use crate::io::backlog::{WorkerCredits, socket_queue};
use crate::io::ratelog::{LogLimit, held_back};
use crate::io::stats::{WorkerCounters, WorkerStats};
use crate::io::topology::{Hop, SharedTable, hop_for};
use crate::wire::{OverlayError, OverlayPacket, PacketType};

mod gso;
mod pool;

use gso::{Batcher, Group, Item};
use pool::{BufRing, GsoSlots, SendSlots};

/// Longest the worker blocks in the kernel before it looks at `stop`.
pub const WAIT_SLICE: Duration = Duration::from_millis(100);
/// Longest it blocks while XDP counts its window full (it sheds everything
/// for this worker): if the credits were lost before the socket, the next
/// look at the empty queue takes them back this soon.
pub const WAIT_SLICE_CLOSED: Duration = Duration::from_millis(1);
/// Longest the worker waits for cancelled operations to complete on stop.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// Window of the log limit on dropped packets.
const DROP_LOG_WINDOW: Duration = Duration::from_secs(10);
/// Most lines about dropped packets per worker and window.
const DROP_LOG_BURST: u32 = 5;
/// GSO sends in flight per worker at most (a group waits for a slot by
/// going out one datagram at a time).
const GSO_SLOTS: u16 = 256;
/// Consecutive failed receives (other than "no buffer") after which the
/// worker gives up instead of re-arming forever.
pub const RECV_ERRORS_MAX: u32 = 64;

/// Smallest and largest `buffer_size` (as in the config file).
pub const BUFFER_SIZE_MIN: u32 = 256;
/// See [`BUFFER_SIZE_MIN`].
pub const BUFFER_SIZE_MAX: u32 = 65536;
/// Most provided buffers per worker: the kernel's buffer-ring limit.
pub const BUFFER_COUNT_MAX: u16 = 32768;
/// Smallest and largest `ring_entries` (as in the config file).
pub const RING_ENTRIES_MIN: u32 = 8;
/// See [`RING_ENTRIES_MIN`].
pub const RING_ENTRIES_MAX: u32 = 32768;

/// The provided-buffer group of the worker's ring (one group per ring).
const BUF_GROUP: u16 = 0;
/// `struct io_uring_recvmsg_out { namelen, controllen, payloadlen, flags }`,
/// which a multishot recvmsg writes at the start of each buffer.
const RECVMSG_OUT_LEN: usize = 16;
/// Space reserved for the source address in each buffer (fits IPv4 and
/// IPv6 peers).
const NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_in6>();
/// Offset of the datagram in a receive buffer.
pub const PAYLOAD_OFFSET: usize = RECVMSG_OUT_LEN + NAME_LEN;

/// A control packet (overlay type Control) a worker hands to the control
/// thread. Control packets are link-local: never forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPacket {
    /// The sender's underlay address, as the socket saw it.
    pub from: SocketAddr,
    /// The whole overlay packet.
    pub bytes: Vec<u8>,
}

/// What a worker hands to the control thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upcall {
    /// A control packet.
    Control(ControlPacket),
    /// The worker forwarded a packet for `dst` to `next_hop`: a candidate
    /// for the XDP route cache.
    Route {
        /// Destination node.
        dst: NodeId,
        /// The neighbor the worker chose.
        next_hop: NodeId,
    },
    /// The worker found no route for `dst`: a candidate negative entry.
    NoRoute {
        /// Destination node.
        dst: NodeId,
    },
}

/// Where workers send upcalls (bounded; full: counted drop).
pub type UpcallSender = crossbeam_channel::Sender<Upcall>;

/// What connects a worker to the rest of the router.
#[derive(Debug)]
pub struct WorkerLinks {
    /// The published topology.
    pub table: SharedTable,
    /// This worker's counters.
    pub stats: Arc<WorkerStats>,
    /// Set to stop the worker.
    pub stop: Arc<AtomicBool>,
    /// Where control packets and install requests go, if anywhere.
    pub upcalls: Option<UpcallSender>,
    /// This worker's credits in XDP, if load shedding is on: XDP passes
    /// it at most a window of unread data packets (`core::shed::Credits`).
    pub credits: Option<WorkerCredits>,
}

/// Settings of one worker. Field names match the config keys
/// (`underlay.listen`, the rest under `[dataplane]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Address to bind, e.g. `[::]:4799` (dual-stack) or `0.0.0.0:4799`.
    pub listen: SocketAddr,
    /// Submission queue entries.
    pub ring_entries: u32,
    /// Provided receive buffers, a power of two (also the bound on sends in
    /// flight: each send pins one buffer).
    pub buffer_count: u16,
    /// Bytes per receive buffer, including [`PAYLOAD_OFFSET`] bytes of
    /// receive metadata; 2048 fits a 1500-byte MTU datagram.
    pub buffer_size: u32,
    /// Socket receive and send buffer size: `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`
    /// as root, else `SO_RCVBUF`/`SO_SNDBUF` (capped by `net.core.*mem_max`).
    pub recv_buffer_bytes: usize,
    /// The local application's UDP address, if any: packets for this node
    /// go there (whole overlay packet), and data packets from there are
    /// originated by this node (routed without the neighbor check).
    pub app: Option<SocketAddr>,
    /// Most route-cache install requests per second (0: none are made).
    pub install_rate: u32,
    /// Send the datagrams of a batch that go to the same neighbor with the
    /// same length as one UDP GSO send (`UDP_SEGMENT`). Falls back to one
    /// send per datagram by itself where the kernel refuses it.
    pub gso: bool,
    /// Nice value of the worker thread (-20 to 19). Below 0 the scheduler
    /// favours the worker over the kernel's receive threads (threaded NAPI,
    /// ksoftirqd) on a shared CPU, so under overload the CPU goes to the
    /// packets already admitted, not to receiving more (docs/architecture.md,
    /// "Worker priority"). Needs CAP_SYS_NICE below 0; without it the worker
    /// runs at the nice it inherited and says so.
    pub nice: i32,
}

/// Nice values Linux accepts.
pub const NICE_RANGE: std::ops::RangeInclusive<i32> = -20..=19;

impl Default for WorkerConfig {
    fn default() -> WorkerConfig {
        WorkerConfig {
            listen: SocketAddr::from(([0u16; 8], crate::wire::overlay::DEFAULT_PORT)),
            ring_entries: 1024,
            buffer_count: 4096,
            buffer_size: 2048,
            recv_buffer_bytes: 4 << 20,
            app: None,
            install_rate: 0,
            gso: true,
            nice: -10,
        }
    }
}

impl WorkerConfig {
    /// Checks every limit the worker relies on. Messages name the key.
    pub fn validate(&self) -> Result<(), WorkerError> {
        let invalid =
            |key: &'static str, message: String| Err(WorkerError::Config { key, message });
        if !self.buffer_count.is_power_of_two() || self.buffer_count > BUFFER_COUNT_MAX {
            return invalid(
                "buffer_count",
                format!(
                    "{} must be a power of two from 1 to {BUFFER_COUNT_MAX} (e.g. 4096)",
                    self.buffer_count
                ),
            );
        }
        if !NICE_RANGE.contains(&self.nice) {
            return invalid(
                "worker_nice",
                format!(
                    "{} must be from -20 (most favoured) to 19; -10 (the default) favours the workers over the kernel's receive threads",
                    self.nice
                ),
            );
        }
        if !(BUFFER_SIZE_MIN..=BUFFER_SIZE_MAX).contains(&self.buffer_size) {
            return invalid(
                "buffer_size",
                format!(
                    "{} must be {BUFFER_SIZE_MIN} to {BUFFER_SIZE_MAX} bytes (2048 fits a 1500-byte MTU)",
                    self.buffer_size
                ),
            );
        }
        if !(RING_ENTRIES_MIN..=RING_ENTRIES_MAX).contains(&self.ring_entries)
            || !self.ring_entries.is_power_of_two()
        {
            return invalid(
                "ring_entries",
                format!(
                    "{} must be a power of two from {RING_ENTRIES_MIN} to {RING_ENTRIES_MAX} (e.g. 1024)",
                    self.ring_entries
                ),
            );
        }
        if let Some(addr) = self.app
            && self.listen.is_ipv4()
            && addr.is_ipv6()
        {
            return invalid(
                "app",
                format!(
                    "\"{addr}\" is IPv6 but underlay.listen \"{}\" is IPv4; listen on \"[::]:{}\" or deliver to an IPv4 address",
                    self.listen,
                    self.listen.port()
                ),
            );
        }
        Ok(())
    }

    /// Completion queue entries: room for one completion per buffer (a
    /// receive or a send, never both at once), twice over, so the CQ does
    /// not overflow.
    fn cq_entries(&self) -> u32 {
        (2 * self.ring_entries).max(2 * u32::from(self.buffer_count))
    }
}

/// Why a worker could not start or stopped with an error. Each message says
/// what to change.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A setting out of range.
    #[error("dataplane.{key} = {message}")]
    Config {
        /// The `[dataplane]` key.
        key: &'static str,
        /// The value and the allowed range.
        message: String,
    },
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

/// A running worker thread.
#[derive(Debug)]
pub struct Worker {
    index: usize,
    local_addr: SocketAddr,
    /// A second handle on the worker's socket, for the control thread's sends.
    socket: Socket,
    thread: JoinHandle<Result<(), WorkerError>>,
}

/// Sets the calling thread's nice value (Linux applies PRIO_PROCESS to a
/// thread ID, not to the whole process).
fn set_thread_nice(nice: i32) -> std::io::Result<()> {
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
fn thread_nice() -> Option<i32> {
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

impl Worker {
    /// Creates the socket (`SO_REUSEPORT`, so N workers can bind the same
    /// address), the ring and the buffer pool, then starts the thread
    /// `xorlay-worker-{index}`. Set-up errors are returned here.
    pub fn spawn(
        index: usize,
        config: &WorkerConfig,
        links: WorkerLinks,
    ) -> Result<Worker, WorkerError> {
        config.validate()?;
        let config = config.clone();
        // The ring is created on the worker thread itself (it is
        // single-issuer); the thread reports set-up success or failure here.
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name(format!("xorlay-worker-{index}"))
            .spawn(move || {
                if let Err(e) = set_thread_nice(config.nice) {
                    log::warn!(
                        "worker {index}: cannot set its nice value to {} ({e}); it runs at {}. Run as root or grant CAP_SYS_NICE (AmbientCapabilities in the systemd unit), or set dataplane.worker_nice = 0",
                        config.nice,
                        thread_nice().map_or_else(|| "its inherited nice".to_string(), |n| n.to_string())
                    );
                }
                let engine = match Engine::new(index, &config, links) {
                    Ok(engine) => engine,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return Ok(());
                    }
                };
                let socket =
                    engine
                        .state
                        .socket
                        .try_clone()
                        .map_err(|source| WorkerError::Socket {
                            listen: config.listen,
                            step: "dup",
                            source,
                        });
                let _ = ready_tx.send(socket.map(|socket| (engine.local_addr, socket)));
                drop(ready_tx);
                engine.run()
            })
            .map_err(|source| WorkerError::Thread { index, source })?;
        match ready_rx.recv() {
            Ok(Ok((local_addr, socket))) => Ok(Worker {
                index,
                local_addr,
                socket,
                thread,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(mpsc::RecvError) => {
                let _ = thread.join();
                Err(WorkerError::Panicked { index })
            }
        }
    }

    /// The address the socket is bound to (the real port when `listen` had
    /// port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The worker's socket (a duplicate handle): the control thread sends
    /// its packets through it, so they leave from the overlay port.
    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// Waits for the thread to end (after `stop` was set) and returns how it
    /// ended.
    pub fn join(self) -> Result<(), WorkerError> {
        match self.thread.join() {
            Ok(result) => result,
            Err(_) => Err(WorkerError::Panicked { index: self.index }),
        }
    }
}

/// What an operation's `user_data` says it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// The multishot receive.
    Recv,
    /// A send from slot (= buffer) `n`.
    Send(u16),
    /// A GSO send from GSO slot `n`.
    Gso(u16),
}

const OP_SHIFT: u32 = 32;
const OP_RECV: u64 = 1;
const OP_SEND: u64 = 2;
const OP_GSO: u64 = 3;

impl Op {
    fn encode(self) -> u64 {
        match self {
            Op::Recv => OP_RECV << OP_SHIFT,
            Op::Send(slot) => (OP_SEND << OP_SHIFT) | u64::from(slot),
            Op::Gso(slot) => (OP_GSO << OP_SHIFT) | u64::from(slot),
        }
    }

    fn decode(user_data: u64) -> Option<Op> {
        let low = user_data & ((1 << OP_SHIFT) - 1);
        match user_data >> OP_SHIFT {
            OP_RECV if low == 0 => Some(Op::Recv),
            OP_SEND => u16::try_from(low).ok().map(Op::Send),
            OP_GSO => u16::try_from(low).ok().map(Op::Gso),
            _ => None,
        }
    }
}

/// Where a multishot recvmsg put the datagram in its buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Received {
    /// The whole datagram, at this range of the buffer.
    Whole(Range<usize>),
    /// The datagram of `len` bytes did not fit (MSG_TRUNC).
    Truncated { len: usize },
}

/// Reads the `io_uring_recvmsg_out` header at the start of `buf` (the bytes
/// the completion reported) for a msghdr with `name_len` bytes of name and
/// no control data.
fn locate_payload(buf: &[u8], name_len: usize) -> Received {
    let field = |i: usize| -> usize {
        let at = i * 4;
        match buf.get(at..at + 4) {
            Some(b) => u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize,
            None => 0,
        }
    };
    let start = RECVMSG_OUT_LEN + name_len;
    let (control_len, payload_len, flags) = (field(1), field(2), field(3));
    if buf.len() < start || control_len != 0 {
        // Not what the kernel writes for our msghdr; never expected.
        return Received::Truncated { len: payload_len };
    }
    let end = start + payload_len;
    if flags & (libc::MSG_TRUNC as usize) != 0 || end > buf.len() {
        return Received::Truncated { len: payload_len };
    }
    Received::Whole(start..end)
}

/// The sender's address from the name a multishot recvmsg wrote after the
/// `io_uring_recvmsg_out` header of `buf` (IPv4 peers of a dual-stack
/// socket appear v4-mapped, as in `topology::socket_form`).
fn source_addr(buf: &[u8]) -> Option<SocketAddr> {
    let name_len = u32::from_ne_bytes(buf.get(0..4)?.try_into().ok()?) as usize;
    let name = buf.get(RECVMSG_OUT_LEN..RECVMSG_OUT_LEN + name_len.min(NAME_LEN))?;
    let family = u16::from_ne_bytes(name.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(name.get(2..4)?.try_into().ok()?);
    match i32::from(family) {
        libc::AF_INET => {
            let ip: [u8; 4] = name.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::from((ip, port)))
        }
        libc::AF_INET6 => {
            let ip: [u8; 16] = name.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(name.get(24..28)?.try_into().ok()?);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip.into(),
                port,
                0,
                scope,
            )))
        }
        _ => None,
    }
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

/// Errors of `io_uring_enter` after which the loop just carries on: a
/// timeout, a signal, or a full completion queue that draining resolves.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN)
    )
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

fn open_socket(config: &WorkerConfig) -> Result<Socket, WorkerError> {
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
    set_buffer_size(&socket, libc::SO_RCVBUFFORCE, config.recv_buffer_bytes)
        .map_err(fail("SO_RCVBUF"))?;
    set_buffer_size(&socket, libc::SO_SNDBUFFORCE, config.recv_buffer_bytes)
        .map_err(fail("SO_SNDBUF"))?;
    socket
        .bind(&SockAddr::from(listen))
        .map_err(|source| bind_error(source, listen))?;
    Ok(socket)
}

fn open_ring(config: &WorkerConfig) -> Result<IoUring, WorkerError> {
    let entries = config.ring_entries;
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

/// Everything a worker thread owns. Created and used on that thread only.
struct Engine {
    /// The ring; while it is split, `state` is borrowed beside it.
    ring: IoUring,
    state: State,
    table: SharedTable,
    stats: Arc<WorkerStats>,
    stop: Arc<AtomicBool>,
    local_addr: SocketAddr,
}

/// The worker's state apart from the ring.
struct State {
    index: usize,
    /// Kept open for as long as operations may refer to its fd.
    socket: Socket,
    fd: types::Fd,
    bufs: BufRing,
    slots: SendSlots,
    /// GSO sends in flight (each pins the buffers of its datagrams).
    gso_slots: GsoSlots,
    /// The forwards of the current batch, grouped for GSO sends.
    batcher: Batcher,
    /// Whether forwards are grouped into GSO sends (config, and until the
    /// kernel refuses one).
    gso: bool,
    /// The multishot recvmsg reads `msg_namelen`/`msg_controllen` from it.
    recv_msg: Box<libc::msghdr>,
    /// The local application: where to deliver, and its address as the
    /// socket sees it (to recognise its packets).
    app: Option<(SockAddr, SocketAddr)>,
    /// Where control packets and install requests go.
    upcalls: Option<UpcallSender>,
    /// The per-packet policy (and which install requests to make).
    forwarder: Forwarder,
    /// The time of the current completion batch.
    batch_now: Instant,
    /// Lines about dropped packets (anyone can send them).
    drop_log: LogLimit,
    /// The multishot receive is queued or in flight.
    recv_armed: bool,
    /// Sends queued or in flight (each pins one buffer and one slot).
    sends_in_flight: u32,
    /// Sends queued since the last submission.
    sends_queued: u32,
    /// Failed receives in a row.
    recv_errors: u32,
    /// A submission error met mid-batch, reported after the batch.
    fatal: Option<io::Error>,
    /// The credits in XDP and this side of them (load shedding by queue).
    credits: Option<(WorkerCredits, Credits)>,
    counters: WorkerCounters,
}

impl Engine {
    fn new(index: usize, config: &WorkerConfig, links: WorkerLinks) -> Result<Engine, WorkerError> {
        let WorkerLinks {
            table,
            stats,
            stop,
            upcalls,
            credits,
        } = links;
        let socket = open_socket(config)?;
        let local_addr = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(config.listen);
        let ring = open_ring(config)?;
        let mut bufs = BufRing::new(config.buffer_count, config.buffer_size).map_err(|source| {
            WorkerError::Memory {
                bytes: BufRing::bytes(config.buffer_count, config.buffer_size),
                source,
            }
        })?;
        bufs.register(&ring.submitter(), BUF_GROUP)
            .map_err(|source| match source.raw_os_error() {
                Some(libc::ENOMEM) => WorkerError::Memory {
                    bytes: BufRing::bytes(config.buffer_count, config.buffer_size),
                    source,
                },
                _ => WorkerError::BufferRing {
                    count: config.buffer_count,
                    source,
                },
            })?;
        // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
        let mut recv_msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_msg.msg_namelen = NAME_LEN as libc::socklen_t;
        let fd = types::Fd(std::os::fd::AsRawFd::as_raw_fd(&socket));
        let mut state = State {
            index,
            socket,
            fd,
            slots: SendSlots::new(bufs.count()),
            gso_slots: GsoSlots::new(GSO_SLOTS.min(bufs.count())),
            batcher: Batcher::default(),
            gso: config.gso,
            bufs,
            recv_msg,
            app: config.app.map(|addr| {
                (
                    hop_for(&config.listen, addr),
                    socket_form(&config.listen, addr),
                )
            }),
            // Install requests need somewhere to go.
            forwarder: Forwarder::new(if upcalls.is_some() {
                config.install_rate
            } else {
                0
            }),
            upcalls,
            batch_now: Instant::now(),
            drop_log: LogLimit::new(DROP_LOG_WINDOW, DROP_LOG_BURST),
            recv_armed: false,
            sends_in_flight: 0,
            sends_queued: 0,
            recv_errors: 0,
            fatal: None,
            credits: None,
            counters: WorkerCounters::default(),
        };
        if let Some(credits) = credits {
            state.take_credits(credits);
        }
        Ok(Engine {
            ring,
            state,
            table,
            stats,
            stop,
            local_addr,
        })
    }

    /// Serves until `stop` or an error, then shuts down and frees.
    fn run(mut self) -> Result<(), WorkerError> {
        let served = self.serve();
        let drained = self.drain();
        self.stats.publish(&self.state.counters);
        let freed = self.teardown(drained.is_ok());
        served.and(drained).and(freed)
    }

    fn serve(&mut self) -> Result<(), WorkerError> {
        let index = self.state.index;
        let timeout = Timespec::from(WAIT_SLICE);
        let args = SubmitArgs::new().timespec(&timeout);
        let timeout_closed = Timespec::from(WAIT_SLICE_CLOSED);
        let args_closed = SubmitArgs::new().timespec(&timeout_closed);
        let (submitter, mut sq, mut cq) = self.ring.split();
        let state = &mut self.state;
        state.arm_recv(&submitter, &mut sq);
        loop {
            // One enter per batch: submit the sends (and re-armed receive)
            // queued by the previous batch, and wait for completions.
            sq.sync();
            let wait = if state.window_closed() {
                &args_closed
            } else {
                &args
            };
            match submitter.submit_with_args(1, wait) {
                Ok(_) => {}
                Err(e) if is_transient(&e) => {}
                Err(source) => {
                    return Err(WorkerError::Io {
                        index,
                        what: "io_uring_enter",
                        source,
                    });
                }
            }
            sq.sync();
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            // The table is loaded after the completion snapshot, so a packet
            // sent after a table store is routed by that table or a newer one.
            cq.sync();
            let guard = self.table.load();
            let table: &Topology<Hop> = &guard;
            state.batch_now = Instant::now();
            let data_before = state.data_read();
            for cqe in &mut cq {
                state.complete(&cqe, Some(table), &submitter, &mut sq);
            }
            cq.sync(); // hand the completion slots back before waiting again
            drop(guard);
            state.send_grouped(&submitter, &mut sq);
            state.end_batch(&submitter, &mut sq);
            state.return_credits(state.data_read().wrapping_sub(data_before));
            self.stats.publish(&state.counters);
            if let Some(source) = state.fatal.take() {
                return Err(WorkerError::Io {
                    index,
                    what: "io_uring_enter (mid-batch)",
                    source,
                });
            }
            if state.recv_errors >= RECV_ERRORS_MAX {
                return Err(WorkerError::Io {
                    index,
                    what: "multishot recvmsg",
                    source: io::Error::other(format!("{RECV_ERRORS_MAX} receives in a row failed")),
                });
            }
        }
    }

    /// Cancels every operation in flight and reaps their completions.
    fn drain(&mut self) -> Result<(), WorkerError> {
        let index = self.state.index;
        let (submitter, mut sq, mut cq) = self.ring.split();
        let state = &mut self.state;
        // Anything still queued goes in first, so it can be cancelled too.
        sq.sync();
        let _ = submitter.submit();
        sq.sync();
        // Errors are fine: ENOENT (nothing in flight) or ETIME (some did not
        // cancel in time, caught by the wait below).
        let _ = submitter
            .register_sync_cancel(Some(Timespec::from(DRAIN_TIMEOUT)), CancelBuilder::any());
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let slice = Timespec::from(Duration::from_millis(10));
        let args = SubmitArgs::new().timespec(&slice);
        loop {
            cq.sync();
            for cqe in &mut cq {
                state.complete(&cqe, None, &submitter, &mut sq);
            }
            cq.sync();
            let pending = state.sends_in_flight + u32::from(state.recv_armed);
            if pending == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(WorkerError::Drain {
                    index,
                    pending,
                    timeout_ms: DRAIN_TIMEOUT.as_millis(),
                });
            }
            let _ = submitter.submit_with_args(1, &args);
        }
    }

    /// Frees everything in an order the kernel allows: buffer ring
    /// unregistered, then the ring closed, then the memory unmapped. If
    /// operations did not drain or the unregister failed, the memory they
    /// might touch is leaked instead.
    fn teardown(self, drained: bool) -> Result<(), WorkerError> {
        let Engine { ring, state, .. } = self;
        let State {
            socket,
            bufs,
            slots,
            gso_slots,
            recv_msg,
            index,
            ..
        } = state;
        let unregistered = drained && ring.submitter().unregister_buf_ring(BUF_GROUP).is_ok();
        drop(ring);
        drop(socket);
        if unregistered {
            drop(bufs);
            drop(slots);
            drop(gso_slots);
            drop(recv_msg);
            Ok(())
        } else {
            bufs.leak();
            slots.leak();
            gso_slots.leak();
            std::mem::forget(recv_msg);
            if drained {
                log::warn!(
                    "worker {index}: unregistering the buffer ring failed; its memory was leaked"
                );
            }
            Ok(())
        }
    }
}

impl State {
    /// Data packets read from the network so far (what XDP may have
    /// counted for this worker): everything received but control packets
    /// and the local application's.
    fn data_read(&self) -> u64 {
        let c = &self.counters;
        c.rx_packets
            .wrapping_sub(c.control_rx)
            .wrapping_sub(c.app_rx)
    }

    /// Sets the window from the socket's receive buffer and makes the
    /// credits this worker's.
    fn take_credits(&mut self, credits: WorkerCredits) {
        let mut side = Credits::new(CreditConfig::default());
        let Some((_, capacity)) = socket_queue(&self.socket) else {
            log::warn!(
                "worker {}: SO_MEMINFO unavailable, load shedding by queue is off for it",
                self.index
            );
            return;
        };
        // Nothing queued yet: whatever XDP counted so far is settled.
        credits.set_consumed(side.queue_seen(0, credits.admitted()));
        credits.set_window(side.window(capacity));
        self.credits = Some((credits, side));
    }

    /// Whether XDP counts this worker's window full: it passes it nothing
    /// until credits come back.
    fn window_closed(&self) -> bool {
        self.credits.as_ref().is_some_and(|(credits, side)| {
            let unread = credits.admitted().wrapping_sub(side.consumed()) as i64;
            unread >= i64::from(credits.window())
        })
    }

    /// After a batch that read `read` data packets: returns their credits
    /// to XDP, and once per look interval takes back the credits of packets
    /// lost before the socket (an empty queue).
    fn return_credits(&mut self, read: u64) {
        let Some((credits, side)) = &mut self.credits else {
            return;
        };
        let mut consumed = side.read(read);
        if side.wants_look(self.batch_now) {
            let admitted = credits.admitted();
            if let Some((queued, _)) = socket_queue(&self.socket) {
                consumed = side.queue_seen(queued, admitted);
                self.counters.credit_resyncs = side.resyncs;
            }
        }
        credits.set_consumed(consumed);
    }

    /// Queues the multishot receive if it is not armed and buffers exist.
    fn arm_recv(&mut self, submitter: &Submitter<'_>, sq: &mut SubmissionQueue<'_>) {
        if self.recv_armed || self.bufs.in_ring() == 0 {
            return;
        }
        // MSG_TRUNC: the completion reports a datagram's real length even
        // when it did not fit the buffer (counted in rx_bytes).
        let entry = opcode::RecvMsgMulti::new(self.fd, &raw const *self.recv_msg, BUF_GROUP)
            .flags(libc::MSG_TRUNC as u32)
            .build()
            .user_data(Op::Recv.encode());
        if self.push(&entry, submitter, sq) {
            self.recv_armed = true;
        }
    }

    /// Pushes an SQE, flushing the queue to the kernel once if it is full.
    fn push(
        &mut self,
        entry: &squeue::Entry,
        submitter: &Submitter<'_>,
        sq: &mut SubmissionQueue<'_>,
    ) -> bool {
        // SAFETY: every SQE the worker builds points only at memory owned by
        // `self` that outlives the operation: the recv msghdr (boxed, freed
        // at teardown after draining), a send or GSO slot's msghdr, iovecs,
        // address and control message (boxed slots, not reused until the
        // send's completion) and the receive buffers they point into
        // (pinned by that slot until the same completion).
        if unsafe { sq.push(entry) }.is_ok() {
            return true;
        }
        self.flush(submitter, sq);
        // SAFETY: as above.
        unsafe { sq.push(entry) }.is_ok()
    }

    /// Submits what is queued now (the SQ filled mid-batch).
    fn flush(&mut self, submitter: &Submitter<'_>, sq: &mut SubmissionQueue<'_>) {
        sq.sync();
        match submitter.submit() {
            Ok(_) => {}
            Err(e) if is_transient(&e) => {}
            Err(e) => self.fatal = Some(e),
        }
        sq.sync();
        if self.sends_queued > 0 {
            self.counters.tx_batches += 1;
            self.sends_queued = 0;
        }
    }

    /// Closes a batch: buffers back to the kernel, receive re-armed if it
    /// ended, sends counted as one batch for the coming submission.
    fn end_batch(&mut self, submitter: &Submitter<'_>, sq: &mut SubmissionQueue<'_>) {
        self.bufs.publish();
        self.arm_recv(submitter, sq);
        if self.sends_queued > 0 {
            self.counters.tx_batches += 1;
            self.sends_queued = 0;
        }
    }

    /// Handles one completion. `table` is `None` while draining: received
    /// datagrams are then discarded uncounted and nothing new is queued.
    fn complete(
        &mut self,
        cqe: &cqueue::Entry,
        table: Option<&Topology<Hop>>,
        submitter: &Submitter<'_>,
        sq: &mut SubmissionQueue<'_>,
    ) {
        match Op::decode(cqe.user_data()) {
            Some(Op::Recv) => self.on_recv(cqe.result(), cqe.flags(), table, submitter, sq),
            Some(Op::Send(slot)) => self.on_send(slot, cqe.result()),
            Some(Op::Gso(slot)) => {
                self.on_gso_send(slot, cqe.result(), table.is_some(), submitter, sq)
            }
            None => log::debug!(
                "worker {}: completion with unknown user_data {:#x}",
                self.index,
                cqe.user_data()
            ),
        }
    }

    fn on_send(&mut self, slot: u16, result: i32) {
        if !self.slots.release(slot) {
            debug_assert!(false, "send completion for idle slot {slot}");
            return;
        }
        self.sends_in_flight -= 1;
        if result < 0 && result != -libc::ECANCELED {
            self.counters.tx_errors += 1;
        }
        self.bufs.give_back(slot);
    }

    fn on_recv(
        &mut self,
        result: i32,
        flags: u32,
        table: Option<&Topology<Hop>>,
        submitter: &Submitter<'_>,
        sq: &mut SubmissionQueue<'_>,
    ) {
        if !cqueue::more(flags) {
            self.recv_armed = false; // re-armed at the end of the batch
        }
        let bid = cqueue::buffer_select(flags);
        if result < 0 {
            if let Some(bid) = bid {
                self.bufs.taken();
                self.bufs.give_back(bid);
            }
            match -result {
                libc::ENOBUFS => self.counters.rx_no_buffer += 1,
                libc::ECANCELED => {}
                _ => self.recv_errors += 1,
            }
            return;
        }
        let Some(bid) = bid else {
            self.recv_errors += 1; // impossible with BUFFER_SELECT
            return;
        };
        self.bufs.taken();
        self.recv_errors = 0;
        let Some(table) = table else {
            self.bufs.give_back(bid); // draining
            return;
        };
        self.counters.rx_packets += 1;
        let Some(buf) = self.bufs.received(bid, result as usize) else {
            self.counters.drop_rx_truncated += 1;
            self.bufs.give_back(bid);
            return;
        };
        let payload = match locate_payload(buf, NAME_LEN) {
            Received::Whole(range) => range,
            Received::Truncated { len } => {
                self.counters.rx_bytes += len as u64;
                self.counters.drop_rx_truncated += 1;
                self.bufs.give_back(bid);
                return;
            }
        };
        let len = payload.len();
        self.counters.rx_bytes += len as u64;
        let source = source_addr(buf);
        let mut packet = OverlayPacket::new_unchecked(&mut buf[payload.clone()]);
        if let Err(e) = packet.validate() {
            self.counters.count_drop(DropReason::Malformed(e));
            self.bufs.give_back(bid);
            return;
        }
        let Some(packet_type) = PacketType::from_u8(packet.packet_type_raw()) else {
            // validate() checked the type; kept as a counted drop.
            self.counters
                .count_drop(DropReason::Malformed(OverlayError::BadType));
            self.bufs.give_back(bid);
            return;
        };
        let header = Header {
            packet_type,
            dst: packet.dst(),
            hop_limit: packet.hop_limit(),
        };
        let origin = match (&self.app, source) {
            (Some((_, app)), Some(from)) if *app == from => Origin::LocalApp,
            (_, Some(from)) if table.accepts(&from) => Origin::Neighbor,
            _ => Origin::Unknown,
        };
        let action = self
            .forwarder
            .handle(self.batch_now, &header, origin, &table.table);
        if origin == Origin::LocalApp && !matches!(action, Action::ToControl) {
            self.counters.app_rx += 1;
        }
        match action {
            Action::ToControl => {
                // Link-local: to the control thread, never forwarded.
                let handed = match (&self.upcalls, source) {
                    (Some(upcalls), Some(from)) => upcalls
                        .try_send(Upcall::Control(ControlPacket {
                            from,
                            bytes: packet.into_inner().to_vec(),
                        }))
                        .is_ok(),
                    _ => false,
                };
                if handed {
                    self.counters.control_rx += 1;
                } else {
                    self.counters.drop_control_full += 1;
                }
                self.bufs.give_back(bid);
            }
            Action::Deliver => match self.app.as_ref().map(|(hop, _)| hop.clone()) {
                None => {
                    self.counters.delivered += 1;
                    self.bufs.give_back(bid);
                }
                Some(dst) => {
                    if self.send(bid, payload, &dst, submitter, sq) {
                        self.counters.delivered += 1;
                    } else {
                        self.counters.drop_tx_full += 1;
                        self.bufs.give_back(bid);
                    }
                }
            },
            Action::Forward {
                next_hop,
                hop,
                hop_limit,
                install,
            } => {
                packet.set_hop_limit(hop_limit);
                if self.gso {
                    // Sent (and counted) with its group after the batch.
                    let item = Item {
                        bid,
                        start: payload.start,
                        len,
                    };
                    self.batcher.push(hop, item);
                } else {
                    self.forward_one(bid, payload, hop, submitter, sq);
                }
                self.request_install(
                    install,
                    Upcall::Route {
                        dst: header.dst,
                        next_hop: *next_hop,
                    },
                );
            }
            Action::Miss { dst, install } => {
                self.request_install(install, Upcall::NoRoute { dst });
                if let Some(held) = self.drop_log.admit(self.batch_now) {
                    log::warn!(
                        "worker {}: no route to {} (no neighbor is closer to it than this \
                         node): dropped; `xorlay stats` counts these in drop_no_route{}",
                        self.index,
                        dst.short(),
                        held_back(held)
                    );
                }
                self.counters.count_drop(DropReason::NoRoute);
                self.bufs.give_back(bid);
            }
            Action::Drop(reason) => {
                self.counters.count_drop(reason);
                self.bufs.give_back(bid);
            }
        }
    }

    /// Sends one forwarded datagram and counts the outcome.
    fn forward_one(
        &mut self,
        bid: u16,
        range: Range<usize>,
        dst: &SockAddr,
        submitter: &Submitter<'_>,
        sq: &mut SubmissionQueue<'_>,
    ) {
        let len = range.len();
        if self.send(bid, range, dst, submitter, sq) {
            self.counters.forwarded += 1;
            self.counters.tx_bytes += len as u64;
        } else {
            self.counters.drop_tx_full += 1;
            self.bufs.give_back(bid);
        }
    }

    /// Sends the forwards the batch grouped: a group of one as a plain
    /// send, larger groups as one GSO send each.
    fn send_grouped(&mut self, submitter: &Submitter<'_>, sq: &mut SubmissionQueue<'_>) {
        if self.batcher.is_empty() {
            return;
        }
        self.batcher.finish();
        while let Some(group) = self.batcher.ready() {
            self.send_group(&group, submitter, sq);
            self.batcher.recycle(group);
        }
    }

    fn send_group(
        &mut self,
        group: &Group,
        submitter: &Submitter<'_>,
        sq: &mut SubmissionQueue<'_>,
    ) {
        let one_by_one = |state: &mut State, sq: &mut SubmissionQueue<'_>| {
            for item in &group.items {
                let range = item.start..item.start + item.len;
                state.forward_one(item.bid, range, &group.dst, submitter, sq);
            }
        };
        let (true, Ok(seg_len)) = (group.items.len() > 1, u16::try_from(group.seg_len)) else {
            return one_by_one(self, sq);
        };
        let bufs = &self.bufs;
        let parts = group
            .items
            .iter()
            .map(|i| (i.bid, bufs.addr(i.bid, i.start), i.len));
        let Some((slot, msg)) = self.gso_slots.prepare(&group.dst, seg_len, parts) else {
            return one_by_one(self, sq); // every GSO slot in flight
        };
        let entry = opcode::SendMsg::new(self.fd, msg)
            .build()
            .user_data(Op::Gso(slot).encode());
        if !self.push(&entry, submitter, sq) {
            let _ = self.gso_slots.release(slot);
            return one_by_one(self, sq);
        }
        self.sends_in_flight += 1;
        self.sends_queued += 1;
        let n = group.items.len() as u64;
        self.counters.forwarded += n;
        self.counters.tx_bytes += group.total as u64;
        self.counters.tx_gso_sends += 1;
        self.counters.tx_gso_segments += n;
    }

    /// A GSO send completed. If the kernel refused GSO on this path (no
    /// `UDP_SEGMENT` support, or a segment over the path MTU), its
    /// datagrams go out one by one and this worker stops grouping.
    fn on_gso_send(
        &mut self,
        slot: u16,
        result: i32,
        serving: bool,
        submitter: &Submitter<'_>,
        sq: &mut SubmissionQueue<'_>,
    ) {
        let Some(released) = self.gso_slots.release(slot) else {
            debug_assert!(false, "GSO completion for idle slot {slot}");
            return;
        };
        self.sends_in_flight -= 1;
        let refused = matches!(-result, libc::EIO | libc::EINVAL | libc::EOPNOTSUPP);
        if result >= 0 || result == -libc::ECANCELED || !(serving && refused) {
            if result < 0 && result != -libc::ECANCELED {
                self.counters.tx_errors += released.parts().len() as u64;
            }
            for &(bid, _, _) in released.parts() {
                self.bufs.give_back(bid);
            }
            return;
        }
        if self.gso {
            self.gso = false;
            log::info!(
                "worker {}: the kernel refused a UDP GSO send to {:?} ({}); sending datagrams one by one from now on",
                self.index,
                released.dst.as_socket(),
                io::Error::from_raw_os_error(-result)
            );
        }
        self.counters.tx_gso_refused += 1;
        for &(bid, data, len) in released.parts() {
            if !self.send_from(bid, data, len, &released.dst, submitter, sq) {
                // Counted as forwarded when the group was queued.
                self.counters.tx_errors += 1;
                self.bufs.give_back(bid);
            }
        }
    }

    /// Makes the install request the forwarder admitted (`upcall`: cache
    /// a route, or no route, in XDP), or counts why none is made.
    fn request_install(&mut self, install: Install, upcall: Upcall) {
        match install {
            Install::Skip => {}
            Install::Limited => self.counters.install_limited += 1,
            Install::Request => {
                // The forwarder admits requests only with a channel.
                let sent = self
                    .upcalls
                    .as_ref()
                    .is_some_and(|upcalls| upcalls.try_send(upcall).is_ok());
                if sent {
                    self.counters.install_requests += 1;
                } else {
                    self.counters.install_dropped += 1;
                }
            }
        }
    }

    /// Queues a send of `range` of buffer `bid` to `dst` from slot `bid`.
    /// On `false` nothing was queued and the caller still owns the buffer.
    fn send(
        &mut self,
        bid: u16,
        range: Range<usize>,
        dst: &SockAddr,
        submitter: &Submitter<'_>,
        sq: &mut SubmissionQueue<'_>,
    ) -> bool {
        let data = self.bufs.addr(bid, range.start);
        self.send_from(bid, data, range.len(), dst, submitter, sq)
    }

    /// [`State::send`] of `len` bytes at `data` inside buffer `bid`.
    fn send_from(
        &mut self,
        bid: u16,
        data: *mut u8,
        len: usize,
        dst: &SockAddr,
        submitter: &Submitter<'_>,
        sq: &mut SubmissionQueue<'_>,
    ) -> bool {
        let Some(msg) = self.slots.prepare(bid, dst, data, len) else {
            return false;
        };
        let entry = opcode::SendMsg::new(self.fd, msg)
            .build()
            .user_data(Op::Send(bid).encode());
        if !self.push(&entry, submitter, sq) {
            self.slots.release(bid);
            return false;
        }
        self.sends_in_flight += 1;
        self.sends_queued += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        for op in [Op::Recv, Op::Send(0), Op::Send(1), Op::Send(u16::MAX)] {
            assert_eq!(Op::decode(op.encode()), Some(op), "{op:?}");
        }
        assert_eq!(Op::decode(0), None);
        assert_eq!(Op::decode((OP_RECV << OP_SHIFT) | 5), None);
        assert_eq!(Op::decode((OP_SEND << OP_SHIFT) | 0x1_0000), None);
        assert_eq!(Op::decode(u64::MAX), None);
    }

    fn recvmsg_out(name_len: usize, payload: &[u8], flags: u32, claimed_len: usize) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&16u32.to_ne_bytes()); // namelen (sockaddr_in)
        b.extend_from_slice(&0u32.to_ne_bytes()); // controllen
        b.extend_from_slice(&(claimed_len as u32).to_ne_bytes());
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend(std::iter::repeat_n(0xaa, name_len));
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn payload_follows_header_and_name() {
        let b = recvmsg_out(NAME_LEN, b"hello", 0, 5);
        assert_eq!(
            locate_payload(&b, NAME_LEN),
            Received::Whole(PAYLOAD_OFFSET..PAYLOAD_OFFSET + 5)
        );
        let empty = recvmsg_out(NAME_LEN, b"", 0, 0);
        assert_eq!(
            locate_payload(&empty, NAME_LEN),
            Received::Whole(PAYLOAD_OFFSET..PAYLOAD_OFFSET)
        );
    }

    #[test]
    fn truncation_is_reported() {
        let b = recvmsg_out(NAME_LEN, b"hel", libc::MSG_TRUNC as u32, 3000);
        assert_eq!(
            locate_payload(&b, NAME_LEN),
            Received::Truncated { len: 3000 }
        );
        // Claimed length beyond what was written, even without the flag.
        let b = recvmsg_out(NAME_LEN, b"hel", 0, 5);
        assert_eq!(locate_payload(&b, NAME_LEN), Received::Truncated { len: 5 });
        // Shorter than the header.
        assert_eq!(
            locate_payload(&[0u8; 10], NAME_LEN),
            Received::Truncated { len: 0 }
        );
    }

    #[test]
    fn default_config_is_valid_and_bounds_are_enforced() {
        let config = WorkerConfig::default();
        config.validate().expect("defaults are valid");
        assert_eq!(config.cq_entries(), 8192);
        assert!(PAYLOAD_OFFSET + 1500 <= config.buffer_size as usize);
        let cases = [
            (
                WorkerConfig {
                    buffer_count: 1000,
                    ..config.clone()
                },
                "buffer_count",
            ),
            (
                WorkerConfig {
                    buffer_count: 0,
                    ..config.clone()
                },
                "buffer_count",
            ),
            (
                WorkerConfig {
                    buffer_size: 100,
                    ..config.clone()
                },
                "buffer_size",
            ),
            (
                WorkerConfig {
                    ring_entries: 1000,
                    ..config.clone()
                },
                "ring_entries",
            ),
            (
                WorkerConfig {
                    ring_entries: 4,
                    ..config.clone()
                },
                "ring_entries",
            ),
            (
                WorkerConfig {
                    listen: "0.0.0.0:1".parse().expect("literal"),
                    app: Some("[::1]:2".parse().expect("literal")),
                    ..config.clone()
                },
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

    #[test]
    fn transient_enter_errors() {
        for code in [libc::ETIME, libc::EINTR, libc::EBUSY, libc::EAGAIN] {
            assert!(is_transient(&io::Error::from_raw_os_error(code)), "{code}");
        }
        assert!(!is_transient(&io::Error::from_raw_os_error(libc::EBADF)));
    }
}
