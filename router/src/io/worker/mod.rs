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
//!
//! Files by role: `setup` (settings, errors, the socket and the ring),
//! `engine` (the loop: serve, drain, tear down), `receive` (a receive
//! completion, from the buffer to the executed [`crate::core::Action`]),
//! `send` (sends, GSO groups and their completions), `credits` (the XDP
//! load-shedding window); `pool` owns the memory, `gso` groups forwards.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use io_uring::types;
use socket2::{SockAddr, Socket};

use crate::core::install::InstallFilter;
use crate::core::shed::Credits;
use crate::core::{Forwarder, NodeId};
use crate::io::backlog::WorkerCredits;
use crate::io::ratelog::LogLimit;
use crate::io::stats::{WorkerCounters, WorkerStats};
use crate::io::topology::SharedTable;

mod credits;
mod engine;
mod gso;
mod pool;
mod receive;
mod send;
mod setup;

pub use setup::{WorkerConfig, WorkerError};

use engine::Engine;
use gso::Batcher;
use pool::{BufRing, GsoSlots, SendSlots};
use setup::{set_thread_nice, thread_nice};

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
/// Lookups a worker asks of the control thread per second, at most.
const LOCATE_RATE: u32 = 1000;

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
        /// The destination's beacon the packet carried (or was given).
        via: Option<NodeId>,
    },
    /// The worker found no route for `dst`: a candidate negative entry.
    NoRoute {
        /// Destination node.
        dst: NodeId,
    },
    /// The local application sent to `dst`, which has no route here and
    /// no known beacon: ask the location service.
    Locate {
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

/// A running worker thread.
#[derive(Debug)]
pub struct Worker {
    index: usize,
    local_addr: SocketAddr,
    /// A second handle on the worker's socket, for the control thread's sends.
    socket: Socket,
    thread: JoinHandle<Result<(), WorkerError>>,
}

/// What the spawning thread hears once the worker is set up: its address
/// and a handle on its socket, or why it could not start.
type Ready = Result<(SocketAddr, Socket), WorkerError>;

/// The worker thread: sets its nice value, sets up, reports on `ready`,
/// then serves until `stop`.
fn thread_main(
    index: usize,
    config: &WorkerConfig,
    links: WorkerLinks,
    ready: mpsc::SyncSender<Ready>,
) -> Result<(), WorkerError> {
    if let Err(e) = set_thread_nice(config.dataplane.worker_nice) {
        log::warn!(
            "worker {index}: cannot set its nice value to {} ({e}); it runs at {}. Run as root or grant CAP_SYS_NICE (AmbientCapabilities in the systemd unit), or set dataplane.worker_nice = 0",
            config.dataplane.worker_nice,
            thread_nice().map_or_else(|| "its inherited nice".to_string(), |n| n.to_string())
        );
    }
    let engine = match Engine::new(index, config, links) {
        Ok(engine) => engine,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let socket = engine
        .state
        .socket
        .try_clone()
        .map_err(|source| WorkerError::Socket {
            listen: config.listen,
            step: "dup",
            source,
        });
    let _ = ready.send(socket.map(|socket| (engine.local_addr, socket)));
    drop(ready);
    engine.run()
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
            .spawn(move || thread_main(index, &config, links, ready_tx))
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
    /// Lookups asked of the control thread (one per destination per
    /// interval, rate-limited).
    locate_filter: InstallFilter,
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
}
