//! The benchmark's load generator and sink: batched (`sendmmsg`/`recvmmsg`)
//! versions of the paced generator and counting sink in [`crate::traffic`].
//!
//! Every packet is an overlay data packet built with the router's own wire
//! module (`traffic::build_data`), addressed to the sink's node ID, so the
//! same bytes cross xorlay and every baseline relay. Its payload starts with
//! a sequence number (the trial number in the top 24 bits, the packet number
//! in the low 40) and a CLOCK_MONOTONIC send timestamp; the sink counts loss,
//! reordering and duplicates per trial and records one-way latency in an
//! HDR histogram.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use xorlay::core::NodeId;
use xorlay::wire::overlay::HEADER_LEN;
use xorlay::wire::{OverlayPacket, OverlayRepr, PacketType};

use crate::traffic::{STAMP_LEN, build_data, monotonic_ns};

/// Bits of the sequence number that count packets within a trial.
const SEQ_BITS: u32 = 40;
/// Most datagrams per `sendmmsg`/`recvmmsg` call.
pub const BATCH_MAX: usize = 64;
/// Largest datagram the sink accepts.
const RX_BUF: usize = 2048;
/// Slowest one-way latency the histogram records (longer is clamped).
const LATENCY_MAX_NS: u64 = 10_000_000_000;

/// Bytes of Ethernet (with FCS, as RFC 2544 counts frames), IPv4 and UDP
/// headers around an overlay packet.
pub const FRAME_OVERHEAD: usize = 14 + 4 + 20 + 8;

/// The smallest frame that carries an overlay data packet with a stamp.
pub const FRAME_MIN: usize = FRAME_OVERHEAD + HEADER_LEN + STAMP_LEN;

/// The overlay payload length (after the overlay header) that makes a frame
/// of `frame_len` bytes on an Ethernet link; frames below [`FRAME_MIN`] are
/// raised to it. Returns (payload length, actual frame length).
pub fn payload_for_frame(frame_len: usize) -> (usize, usize) {
    let frame = frame_len.max(FRAME_MIN);
    (frame - FRAME_OVERHEAD - HEADER_LEN, frame)
}

/// Pins the calling thread to `cpu`. Errors when the CPU does not exist.
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    pin_task(0, cpu)
}

/// Pins task (thread) `tid` to `cpu`; 0 is the calling thread.
pub fn pin_task(tid: i32, cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes within it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: cpu was checked against the set's capacity above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: set is a valid cpu_set_t of the size given.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Pins every thread of process `pid` to `cpu`. Returns how many.
pub fn pin_process(pid: u32, cpu: usize) -> std::io::Result<usize> {
    let mut pinned = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(entry) = entry else { continue };
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        pin_task(tid, cpu)?;
        pinned += 1;
    }
    Ok(pinned)
}

/// One generator run.
#[derive(Debug, Clone, Copy)]
pub struct GenSpec {
    /// Overlay source ID written into each packet.
    pub src: NodeId,
    /// Overlay destination ID (the sink's).
    pub dst: NodeId,
    /// Payload bytes after the overlay header.
    pub payload_len: usize,
    /// Offered packets per second; 0 = as fast as the socket takes them.
    pub rate_pps: u64,
    /// How long to send.
    pub duration: Duration,
    /// Trial number, carried in the sequence numbers.
    pub trial: u32,
}

/// What the generator did.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GenReport {
    /// Datagrams the kernel accepted.
    pub sent: u64,
    /// Failed `sendmmsg` calls (ENOBUFS, EAGAIN ...).
    pub errors: u64,
    /// Seconds from the first to the last send.
    pub elapsed_s: f64,
    /// Flood frames sent along (frame generator with a flood; else 0).
    pub flood_sent: u64,
}

impl GenReport {
    /// Achieved offered rate, packets per second.
    pub fn offered_pps(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.sent as f64 / self.elapsed_s
        } else {
            0.0
        }
    }
}

fn sequence(trial: u32, n: u64) -> u64 {
    (u64::from(trial) << SEQ_BITS) | (n & ((1 << SEQ_BITS) - 1))
}

/// Sends `spec` on a connected socket with `sendmmsg`, paced to
/// `spec.rate_pps`, until `spec.duration` passes or `stop` is set.
pub fn generate(socket: &UdpSocket, spec: &GenSpec, stop: &AtomicBool) -> GenReport {
    generate_to(socket, None, spec, stop)
}

/// [`generate`] to `to` (every datagram addressed), or on a connected
/// socket when `to` is None. The socket may be shared with a thread that
/// receives on it (a benchmark endpoint's control thread).
pub fn generate_to(
    socket: &UdpSocket,
    to: Option<SocketAddr>,
    spec: &GenSpec,
    stop: &AtomicBool,
) -> GenReport {
    let batch = batch_len(spec.rate_pps);
    let mut bufs = data_buffers(spec, batch);
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
    let mut msgs: Vec<libc::mmsghdr> = (0..batch).map(|_| unsafe { std::mem::zeroed() }).collect();
    let name = to.map(socket2::SockAddr::from);
    for (msg, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
        if let Some(name) = name.as_ref() {
            // sendmmsg only reads the name.
            msg.msg_hdr.msg_name = name.as_ptr().cast_mut().cast();
            msg.msg_hdr.msg_namelen = name.len();
        }
    }
    let fd = socket.as_raw_fd();
    // 1 us timer slack (default 50 us) so that pacing sleeps are precise.
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0) };
    let mut report = GenReport::default();
    let start = Instant::now();
    let mut next: u64 = 0;
    let mut last_check = 0u64;
    loop {
        if next >= last_check + 1024 || next == 0 {
            last_check = next;
            if stop.load(Ordering::Relaxed) || start.elapsed() >= spec.duration {
                break;
            }
        }
        if !wait_due(spec, next, start) {
            break;
        }
        stamp_batch(&mut bufs, spec.trial, next);
        // SAFETY: msgs holds `batch` headers pointing at live buffers.
        let rc = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), batch as u32, 0) };
        if rc < 0 {
            report.errors += 1;
            std::thread::yield_now();
            last_check = last_check.saturating_sub(1024); // check the clock again
        } else {
            next += rc as u64;
        }
    }
    report.sent = next;
    report.elapsed_s = start.elapsed().as_secs_f64();
    report
}

/// Datagrams per `sendmmsg`: [`BATCH_MAX`] unpaced, else one per 20 kpps
/// of `rate_pps` (1 to [`BATCH_MAX`]).
fn batch_len(rate_pps: u64) -> usize {
    if rate_pps == 0 {
        BATCH_MAX
    } else {
        usize::try_from(rate_pps / 20_000)
            .unwrap_or(BATCH_MAX)
            .clamp(1, BATCH_MAX)
    }
}

/// `batch` copies of `spec`'s data packet, stamp not yet written.
fn data_buffers(spec: &GenSpec, batch: usize) -> Vec<Vec<u8>> {
    let len = HEADER_LEN + spec.payload_len.max(STAMP_LEN);
    let mut bufs = vec![vec![0u8; len]; batch];
    for buf in &mut bufs {
        build_data(buf, &spec.src, &spec.dst, 0, spec.payload_len);
    }
    bufs
}

/// Paced, sleeps until packet `next` is due (counted from `start`);
/// false when it would be due after `spec.duration`. Unpaced: true at once.
fn wait_due(spec: &GenSpec, next: u64, start: Instant) -> bool {
    if let Some(due_ns) = next
        .saturating_mul(1_000_000_000)
        .checked_div(spec.rate_pps)
    {
        let due = Duration::from_nanos(due_ns);
        if due >= spec.duration {
            return false;
        }
        let now = start.elapsed();
        if let Some(wait) = due.checked_sub(now) {
            // Sleep, never spin: the sink and its NAPI thread share
            // this CPU, and a spinning generator starves them (veth's
            // 256-frame rings overflow and the loss is the generator's).
            std::thread::sleep(wait);
        }
    }
    true
}

/// Writes sequence numbers from `next` on and the time now into the
/// buffers' stamps.
fn stamp_batch(bufs: &mut [Vec<u8>], trial: u32, next: u64) {
    let stamp = monotonic_ns().to_be_bytes();
    for (i, buf) in bufs.iter_mut().enumerate() {
        buf[HEADER_LEN..HEADER_LEN + 8]
            .copy_from_slice(&sequence(trial, next + i as u64).to_be_bytes());
        buf[HEADER_LEN + 8..HEADER_LEN + 16].copy_from_slice(&stamp);
    }
}

/// Live counters of a running sink.
#[derive(Debug, Default)]
pub struct SinkLive {
    /// Valid packets of this trial so far.
    pub valid: AtomicU64,
}

/// What the sink saw in one trial.
#[derive(Debug, Clone)]
pub struct SinkResult {
    /// Datagrams received.
    pub received: u64,
    /// Valid data packets of this trial for this sink (duplicates included).
    pub valid: u64,
    /// Distinct sequence numbers among them.
    pub unique: u64,
    /// Sequence numbers seen more than once.
    pub duplicates: u64,
    /// Packets with a lower sequence number than one seen before.
    pub reordered: u64,
    /// Valid packets of an earlier trial (late arrivals).
    pub stale: u64,
    /// Not a valid overlay data packet for this sink.
    pub malformed: u64,
    /// One-way latency, nanoseconds.
    pub latency: Histogram<u64>,
}

/// A bitmap of sequence numbers seen.
#[derive(Debug)]
struct Seen {
    words: Vec<u64>,
}

impl Seen {
    fn new(capacity: u64) -> Seen {
        let words = usize::try_from(capacity.div_ceil(64)).unwrap_or(1 << 20);
        Seen {
            words: vec![0; words.min(1 << 24)],
        }
    }

    /// Marks `n`; Some(true) when it was already set, None when out of range.
    fn mark(&mut self, n: u64) -> Option<bool> {
        let word = self.words.get_mut(usize::try_from(n / 64).ok()?)?;
        let bit = 1u64 << (n % 64);
        let was = *word & bit != 0;
        *word |= bit;
        Some(was)
    }
}

/// Counts one trial's packets to one node: the bookkeeping of every sink
/// that receives datagrams in userspace (the socket sink below, the
/// benchmark endpoint in [`crate::endpoint`]).
#[derive(Debug)]
pub struct SinkCounter {
    me: NodeId,
    trial: u32,
    seen: Seen,
    highest: Option<u64>,
    latency: Histogram<u64>,
    result: SinkResult,
}

impl SinkCounter {
    /// A counter for trial `trial`'s packets to `me`. `capacity` bounds
    /// duplicate tracking (packet numbers above it are counted but not
    /// checked).
    pub fn new(me: NodeId, trial: u32, capacity: u64) -> anyhow::Result<SinkCounter> {
        Ok(SinkCounter {
            me,
            trial,
            seen: Seen::new(capacity),
            highest: None,
            latency: Histogram::<u64>::new_with_bounds(1, LATENCY_MAX_NS, 3)
                .context("histogram bounds")?,
            result: SinkResult {
                received: 0,
                valid: 0,
                unique: 0,
                duplicates: 0,
                reordered: 0,
                stale: 0,
                malformed: 0,
                latency: Histogram::new(3).context("histogram")?,
            },
        })
    }

    /// Counts one datagram that arrived at `now_ns` (CLOCK_MONOTONIC).
    /// Returns whether it was a valid packet of this trial.
    pub fn record(&mut self, datagram: &[u8], now_ns: u64) -> bool {
        let result = &mut self.result;
        result.received += 1;
        let packet = OverlayPacket::new_unchecked(datagram);
        let ok = packet.check_len().is_ok()
            && OverlayRepr::parse(&packet)
                .is_ok_and(|repr| repr.dst == self.me && repr.packet_type == PacketType::Data)
            && packet.payload().len() >= STAMP_LEN;
        if !ok {
            result.malformed += 1;
            return false;
        }
        let payload = packet.payload();
        let mut word = [0u8; 8];
        word.copy_from_slice(&payload[..8]);
        let seq = u64::from_be_bytes(word);
        word.copy_from_slice(&payload[8..16]);
        let sent_ns = u64::from_be_bytes(word);
        if seq >> SEQ_BITS != u64::from(self.trial) {
            result.stale += 1;
            return false;
        }
        let n = seq & ((1 << SEQ_BITS) - 1);
        result.valid += 1;
        match self.seen.mark(n) {
            Some(true) => result.duplicates += 1,
            Some(false) | None => result.unique += 1,
        }
        match self.highest {
            Some(h) if n < h => result.reordered += 1,
            _ => self.highest = Some(n),
        }
        self.latency
            .saturating_record(now_ns.saturating_sub(sent_ns).clamp(1, LATENCY_MAX_NS));
        true
    }

    /// Valid packets so far.
    pub fn valid(&self) -> u64 {
        self.result.valid
    }

    /// What this trial saw.
    pub fn finish(mut self) -> SinkResult {
        self.result.latency = self.latency;
        self.result
    }
}

/// Receives with `recvmmsg` until `stop` is set, counting trial `trial`'s
/// packets to `me` (see [`SinkCounter`]).
pub fn sink(
    socket: &UdpSocket,
    me: &NodeId,
    trial: u32,
    capacity: u64,
    live: &SinkLive,
    stop: &AtomicBool,
) -> anyhow::Result<SinkResult> {
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .context("sink read timeout")?;
    let mut counter = SinkCounter::new(*me, trial, capacity)?;
    let mut batch = RecvBatch::new();
    while !stop.load(Ordering::Relaxed) {
        let count = match batch.recv(socket) {
            Ok(count) => count,
            Err(e) => match e.kind() {
                std::io::ErrorKind::WouldBlock
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::Interrupted => continue,
                _ => return Err(e).context("sink recvmmsg"),
            },
        };
        let now = monotonic_ns();
        for i in 0..count {
            if counter.record(batch.datagram(i), now) {
                live.valid.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(counter.finish())
}

/// Buffers for one `recvmmsg` call of up to [`BATCH_MAX`] datagrams, with
/// their source addresses.
#[derive(Debug)]
pub struct RecvBatch {
    bufs: Vec<[u8; RX_BUF]>,
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in iovs/msgs point into this struct's own heap
// buffers (which never move or reallocate after new()); sending the whole
// batch to another thread keeps them valid.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// Buffers for [`BATCH_MAX`] datagrams of up to 2048 bytes.
    pub fn new() -> RecvBatch {
        let mut bufs = vec![[0u8; RX_BUF]; BATCH_MAX];
        // SAFETY: sockaddr_storage is plain data; all-zero is valid.
        let mut names: Vec<libc::sockaddr_storage> = (0..BATCH_MAX)
            .map(|_| unsafe { std::mem::zeroed() })
            .collect();
        let mut iovs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: RX_BUF,
            })
            .collect();
        // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
        let mut msgs: Vec<libc::mmsghdr> = (0..BATCH_MAX)
            .map(|_| unsafe { std::mem::zeroed() })
            .collect();
        for ((msg, iov), name) in msgs.iter_mut().zip(iovs.iter_mut()).zip(names.iter_mut()) {
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
            msg.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            msg.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        }
        RecvBatch {
            bufs,
            names,
            iovs,
            msgs,
        }
    }

    /// One `recvmmsg` (waits for the first datagram, up to the socket's
    /// read timeout). Returns how many arrived.
    pub fn recv(&mut self, socket: &UdpSocket) -> std::io::Result<usize> {
        for msg in &mut self.msgs {
            msg.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        }
        // SAFETY: msgs holds BATCH_MAX headers pointing at live buffers
        // (bufs, names, iovs) owned by self.
        let rc = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                BATCH_MAX as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let _ = &self.iovs;
        Ok(usize::try_from(rc).unwrap_or(0).min(BATCH_MAX))
    }

    /// Datagram `i` of the last call.
    pub fn datagram(&self, i: usize) -> &[u8] {
        let len = (self.msgs[i].msg_len as usize).min(RX_BUF);
        &self.bufs[i][..len]
    }

    /// Source address of datagram `i` of the last call (None for an
    /// address family other than IPv4/IPv6).
    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        let len = self.msgs[i].msg_hdr.msg_namelen;
        // SAFETY: names[i] is a sockaddr_storage the kernel filled with
        // `len` bytes of an address.
        let addr = unsafe { socket2::SockAddr::new(self.names[i], len) };
        addr.as_socket()
    }
}

impl Default for RecvBatch {
    fn default() -> RecvBatch {
        RecvBatch::new()
    }
}

/// A sink on its own thread inside a namespace, pinned to a CPU.
#[derive(Debug)]
pub struct SinkThread {
    /// Live counters.
    pub live: Arc<SinkLive>,
    thread: crate::netns::Stoppable<SinkResult>,
}

impl SinkThread {
    /// Binds `bind` in `netns` (pinned to `cpu` when given) and receives
    /// trial `trial`'s packets to `me`.
    pub fn start(
        netns: &str,
        bind: SocketAddr,
        me: NodeId,
        trial: u32,
        capacity: u64,
        cpu: Option<usize>,
    ) -> anyhow::Result<SinkThread> {
        let live = Arc::new(SinkLive::default());
        let counters = live.clone();
        let thread = crate::netns::Stoppable::start(
            netns,
            move || {
                if let Some(cpu) = cpu {
                    let _ = pin_current_thread(cpu);
                }
                bind_udp(bind, 8 << 20)
            },
            move |socket, stop| sink(&socket, &me, trial, capacity, &counters, stop),
        )
        .context("sink")?;
        Ok(SinkThread { live, thread })
    }

    /// Valid packets so far.
    pub fn valid(&self) -> u64 {
        self.live.valid.load(Ordering::Relaxed)
    }

    /// Stops the sink and returns what it saw.
    pub fn finish(self) -> anyhow::Result<SinkResult> {
        self.thread.finish()
    }
}

/// A UDP socket bound to `bind` (SO_REUSEADDR) with `buffer` bytes of
/// receive and send buffer (forced past rmem_max as root).
pub fn bind_udp(bind: SocketAddr, buffer: usize) -> anyhow::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(bind);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, None).context("socket")?;
    socket.set_reuse_address(true).context("SO_REUSEADDR")?;
    let size = libc::c_int::try_from(buffer).unwrap_or(libc::c_int::MAX);
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        // SAFETY: setsockopt with a c_int value of the right size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    socket
        .bind(&bind.into())
        .with_context(|| format!("bind {bind}"))?;
    Ok(socket.into())
}

/// Runs the generator on a thread inside `netns`: binds `bind`, connects to
/// `to`, pins to `cpu`, sends `spec`. Blocks until it is done.
pub fn generate_in(
    netns: &str,
    bind: SocketAddr,
    to: SocketAddr,
    spec: GenSpec,
    cpu: Option<usize>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<GenReport> {
    crate::netns::in_netns(netns, move || {
        if let Some(cpu) = cpu {
            let _ = pin_current_thread(cpu);
        }
        let socket = bind_udp(bind, 4 << 20)?;
        socket
            .connect(to)
            .with_context(|| format!("connect {to}"))?;
        Ok(generate(&socket, &spec, &stop))
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("generator panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes_map_to_payloads() {
        assert_eq!(FRAME_MIN, 46 + 72 + 16);
        assert_eq!(payload_for_frame(64), (16, FRAME_MIN));
        assert_eq!(payload_for_frame(512), (512 - 46 - 72, 512));
        assert_eq!(payload_for_frame(1400).1, 1400);
    }

    #[test]
    fn generator_and_sink_on_loopback() {
        let me = NodeId::from_bytes([7; 32]);
        let rx = bind_udp("127.0.0.1:0".parse().expect("addr"), 1 << 20).expect("bind");
        let addr = rx.local_addr().expect("bound");
        let live = Arc::new(SinkLive::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (live, stop) = (live.clone(), stop.clone());
            std::thread::spawn(move || sink(&rx, &me, 3, 10_000, &live, &stop))
        };
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        tx.connect(addr).expect("connect");
        let spec = GenSpec {
            src: NodeId::from_bytes([1; 32]),
            dst: me,
            payload_len: 100,
            rate_pps: 20_000,
            duration: Duration::from_millis(50),
            trial: 3,
        };
        let sent = generate(&tx, &spec, &AtomicBool::new(false));
        assert!(sent.sent > 0 && sent.sent <= 1_100, "{sent:?}");
        // A stale packet from trial 2 and a foreign datagram.
        let old = GenSpec {
            trial: 2,
            rate_pps: 0,
            duration: Duration::from_millis(1),
            ..spec
        };
        let _ = generate(&tx, &old, &AtomicBool::new(false));
        tx.send(b"junk").expect("send");
        crate::wait_until(Duration::from_secs(5), || {
            live.valid.load(Ordering::Relaxed) >= sent.sent
        });
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::Relaxed);
        let result = thread.join().expect("no panic").expect("sink ok");
        assert_eq!(result.valid, sent.sent);
        assert_eq!(result.unique, sent.sent);
        assert_eq!(result.duplicates, 0);
        assert_eq!(result.malformed, 1);
        assert!(result.stale >= 1);
        assert_eq!(result.latency.len(), sent.sent);
    }
}
