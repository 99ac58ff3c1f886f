//! Overlay traffic: a paced generator and a counting sink. Packets are built
//! with the router's own wire module; the payload carries a sequence number
//! and a monotonic send timestamp.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use xorlay::core::NodeId;
use xorlay::wire::overlay::{DEFAULT_HOP_LIMIT, HEADER_LEN};
use xorlay::wire::{OverlayPacket, OverlayRepr, PacketType};

/// Bytes of the payload's sequence number and timestamp.
pub const STAMP_LEN: usize = 16;

/// Nanoseconds on CLOCK_MONOTONIC (shared by all namespaces of the machine).
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Nanoseconds on `clock` (CLOCK_MONOTONIC, CLOCK_THREAD_CPUTIME_ID ...).
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Writes a data packet into `buf` (header + `payload_len` bytes), stamped
/// with `seq` and the current time. Returns the packet length.
pub fn build_data(
    buf: &mut [u8],
    src: &NodeId,
    dst: &NodeId,
    seq: u64,
    payload_len: usize,
) -> usize {
    let payload_len = payload_len.max(STAMP_LEN);
    let len = HEADER_LEN + payload_len;
    let repr = OverlayRepr {
        packet_type: PacketType::Data,
        hop_limit: DEFAULT_HOP_LIMIT,
        flags: 0,
        payload_len: payload_len as u16,
        dst: *dst,
        src: *src,
        via: None,
    };
    let mut packet = OverlayPacket::new_unchecked(&mut buf[..len]);
    repr.emit(&mut packet);
    let payload = packet.payload_mut();
    payload[..8].copy_from_slice(&seq.to_be_bytes());
    payload[8..16].copy_from_slice(&monotonic_ns().to_be_bytes());
    len
}

/// What a generator run did.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SendReport {
    /// Datagrams handed to the kernel.
    pub sent: u64,
    /// sendto errors (e.g. ENOBUFS).
    pub errors: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// A stream of data packets from one node to another.
#[derive(Debug, Clone, Copy)]
pub struct DataFlow {
    /// Source node ID written into each packet.
    pub src: NodeId,
    /// Destination node ID.
    pub dst: NodeId,
    /// Underlay address of the first hop.
    pub to: SocketAddr,
    /// Packets to send.
    pub count: u64,
    /// Payload bytes after the overlay header (at least [`STAMP_LEN`]).
    pub payload_len: usize,
    /// Most packets per second; 0 = unpaced.
    pub rate_pps: u64,
}

/// Sends `flow` from `socket`, stopping early when `stop` is set.
pub fn send_data(socket: &UdpSocket, flow: &DataFlow, stop: &AtomicBool) -> SendReport {
    let mut buf = vec![0u8; HEADER_LEN + flow.payload_len.max(STAMP_LEN)];
    let start = Instant::now();
    let mut report = SendReport::default();
    for seq in 0..flow.count {
        if seq % 64 == 0 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if let Some(due_ns) = seq.saturating_mul(1_000_000_000).checked_div(flow.rate_pps)
                && let Some(wait) = Duration::from_nanos(due_ns).checked_sub(start.elapsed())
            {
                std::thread::sleep(wait);
            }
        }
        let len = build_data(&mut buf, &flow.src, &flow.dst, seq, flow.payload_len);
        match socket.send_to(&buf[..len], flow.to) {
            Ok(_) => report.sent += 1,
            Err(_) => report.errors += 1,
        }
    }
    report.elapsed = start.elapsed();
    report
}

/// A valid data packet for the receiver, as the generator stamped it.
#[derive(Debug, Clone, Copy)]
struct Data {
    src: NodeId,
    seq: u64,
    sent_ns: u64,
    hop_limit: u8,
}

/// What a received datagram is to the node `me`.
enum Arrival {
    /// Not a valid overlay packet.
    Malformed,
    /// A valid overlay packet, but not a stamped data packet for `me`.
    WrongDst,
    /// A stamped data packet for `me`.
    Data(Data),
}

fn classify(datagram: &[u8], me: &NodeId) -> Arrival {
    let packet = OverlayPacket::new_unchecked(datagram);
    let Ok(repr) = OverlayRepr::parse(&packet) else {
        return Arrival::Malformed;
    };
    let payload = packet.payload();
    if repr.dst != *me || repr.packet_type != PacketType::Data || payload.len() < STAMP_LEN {
        return Arrival::WrongDst;
    }
    let mut word = [0u8; 8];
    word.copy_from_slice(&payload[..8]);
    let seq = u64::from_be_bytes(word);
    word.copy_from_slice(&payload[8..16]);
    Arrival::Data(Data {
        src: repr.src,
        seq,
        sent_ns: u64::from_be_bytes(word),
        hop_limit: repr.hop_limit,
    })
}

/// A node's local application on one socket that both sends and receives:
/// the router takes data only from its `dataplane.app` address and delivers
/// there, so a node that does both needs one socket. Receiving does not
/// block: [`AppSocket::drain`] reads what is queued and records each valid
/// packet by source and sequence number, so a test can tell which sender's
/// packets arrived (a [`Sink`] counts them all together).
#[derive(Debug)]
pub struct AppSocket {
    socket: UdpSocket,
    me: NodeId,
    seq_max: u64,
    /// Valid data packets for this node with a sequence number below
    /// `seq_max`, by source.
    pub seen: BTreeMap<NodeId, BTreeSet<u64>>,
    /// Valid packets whose (source, sequence number) was seen before.
    pub duplicates: u64,
    /// Valid packets with a sequence number of `seq_max` or more (not kept).
    pub untracked: u64,
    /// Valid packets for another node ID, or not stamped data.
    pub wrong_dst: u64,
    /// Not a valid overlay packet.
    pub malformed: u64,
}

impl AppSocket {
    /// Binds `bind` inside namespace `netns` for node `me`, keeping
    /// sequence numbers below `seq_max`.
    pub fn bind_in(
        netns: &str,
        bind: SocketAddr,
        me: NodeId,
        seq_max: u64,
    ) -> anyhow::Result<AppSocket> {
        let socket = crate::netns::in_netns(netns, move || {
            UdpSocket::bind(bind).with_context(|| format!("app bind {bind}"))
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("bind thread panicked"))??;
        socket
            .set_nonblocking(true)
            .context("app socket non-blocking")?;
        Ok(AppSocket {
            socket,
            me,
            seq_max,
            seen: BTreeMap::new(),
            duplicates: 0,
            untracked: 0,
            wrong_dst: 0,
            malformed: 0,
        })
    }

    /// Sends data packets for `dst` to `to` (the router), one per sequence
    /// number of `seqs`, with `payload_len` bytes of payload.
    pub fn send(
        &self,
        dst: &NodeId,
        to: SocketAddr,
        seqs: std::ops::Range<u64>,
        payload_len: usize,
    ) -> SendReport {
        let mut buf = vec![0u8; HEADER_LEN + payload_len.max(STAMP_LEN)];
        let start = Instant::now();
        let mut report = SendReport::default();
        for seq in seqs {
            let len = build_data(&mut buf, &self.me, dst, seq, payload_len);
            match self.socket.send_to(&buf[..len], to) {
                Ok(_) => report.sent += 1,
                Err(_) => report.errors += 1,
            }
        }
        report.elapsed = start.elapsed();
        report
    }

    /// Reads the queued datagrams, at most 4096; returns how many.
    pub fn drain(&mut self) -> anyhow::Result<u64> {
        const READ_MAX: u64 = 4096;
        let mut buf = [0u8; 2048];
        let mut read = 0;
        while read < READ_MAX {
            let len = match self.socket.recv(&mut buf) {
                Ok(len) => len,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(read),
                Err(e) => return Err(e).context("app recv"),
            };
            read += 1;
            match classify(&buf[..len], &self.me) {
                Arrival::Malformed => self.malformed += 1,
                Arrival::WrongDst => self.wrong_dst += 1,
                Arrival::Data(data) if data.seq >= self.seq_max => self.untracked += 1,
                Arrival::Data(data) => {
                    if !self.seen.entry(data.src).or_default().insert(data.seq) {
                        self.duplicates += 1;
                    }
                }
            }
        }
        Ok(read)
    }

    /// How many of `seqs` arrived from `src`.
    pub fn received(&self, src: &NodeId, seqs: std::ops::Range<u64>) -> usize {
        self.seen.get(src).map_or(0, |set| set.range(seqs).count())
    }
}

/// Counters of a running sink, readable while it runs.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Datagrams received.
    pub received: AtomicU64,
    /// Valid data packets addressed to the sink.
    pub valid: AtomicU64,
}

/// What the sink saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkReport {
    /// Datagrams received.
    pub received: u64,
    /// Valid data packets for this sink.
    pub valid: u64,
    /// Valid packets for another node ID.
    pub wrong_dst: u64,
    /// Not a valid overlay packet.
    pub malformed: u64,
    /// Sequence numbers seen more than once.
    pub duplicates: u64,
    /// Packets whose sequence number was lower than one seen before.
    pub reordered: u64,
    /// Count of packets by hop limit on arrival.
    pub hop_limits: BTreeMap<u8, u64>,
    /// One-way latency (send stamp to receive), microseconds.
    pub latency_us_min: f64,
    /// Mean one-way latency, microseconds.
    pub latency_us_mean: f64,
    /// Largest one-way latency, microseconds.
    pub latency_us_max: f64,
}

/// Receives on `socket` until `stop` is set, tracking sequence numbers below
/// `seq_max` (larger ones are counted but not tracked for duplicates).
pub fn run_sink(
    socket: &UdpSocket,
    me: &NodeId,
    seq_max: u64,
    counters: &SinkCounters,
    stop: &AtomicBool,
) -> anyhow::Result<SinkReport> {
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .context("sink read timeout")?;
    let mut seen = vec![false; usize::try_from(seq_max).context("seq_max fits memory")?];
    let mut report = SinkReport {
        latency_us_min: f64::INFINITY,
        ..SinkReport::default()
    };
    let mut latency_sum_us = 0.0;
    let mut highest: Option<u64> = None;
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let len = match socket.recv(&mut buf) {
            Ok(len) => len,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e).context("sink recv"),
        };
        let now = monotonic_ns();
        report.received += 1;
        counters.received.fetch_add(1, Ordering::Relaxed);
        let data = match classify(&buf[..len], me) {
            Arrival::Malformed => {
                report.malformed += 1;
                continue;
            }
            Arrival::WrongDst => {
                report.wrong_dst += 1;
                continue;
            }
            Arrival::Data(data) => data,
        };
        let seq = data.seq;
        let latency_us = now.saturating_sub(data.sent_ns) as f64 / 1000.0;
        report.valid += 1;
        *report.hop_limits.entry(data.hop_limit).or_default() += 1;
        report.latency_us_min = report.latency_us_min.min(latency_us);
        report.latency_us_max = report.latency_us_max.max(latency_us);
        latency_sum_us += latency_us;
        if let Some(slot) = usize::try_from(seq).ok().and_then(|i| seen.get_mut(i)) {
            if *slot {
                report.duplicates += 1;
            }
            *slot = true;
        }
        match highest {
            Some(h) if seq < h => report.reordered += 1,
            _ => highest = Some(seq),
        }
        counters.valid.fetch_add(1, Ordering::Relaxed);
    }
    if report.valid > 0 {
        report.latency_us_mean = latency_sum_us / report.valid as f64;
    } else {
        report.latency_us_min = 0.0;
    }
    Ok(report)
}

/// A sink running on its own thread inside a namespace.
#[derive(Debug)]
pub struct Sink {
    /// Live counters.
    pub counters: Arc<SinkCounters>,
    thread: crate::netns::Stoppable<SinkReport>,
}

impl Sink {
    /// Binds `bind` inside namespace `netns` and starts receiving.
    pub fn start(netns: &str, bind: SocketAddr, me: NodeId, seq_max: u64) -> anyhow::Result<Sink> {
        let counters = Arc::new(SinkCounters::default());
        let live = counters.clone();
        let thread = crate::netns::Stoppable::start(
            netns,
            move || UdpSocket::bind(bind).with_context(|| format!("sink bind {bind}")),
            move |socket, stop| run_sink(&socket, &me, seq_max, &live, stop),
        )
        .context("sink")?;
        Ok(Sink { counters, thread })
    }

    /// Valid packets so far.
    pub fn valid(&self) -> u64 {
        self.counters.valid.load(Ordering::Relaxed)
    }

    /// Stops the sink and returns its report.
    pub fn finish(self) -> anyhow::Result<SinkReport> {
        self.thread.finish()
    }
}

/// Sends datagrams from a thread inside namespace `netns`, bound to `bind`:
/// all of `frames` in order, `repeat` times, with a short pause per round.
pub fn send_raw_in(
    netns: &str,
    bind: SocketAddr,
    to: SocketAddr,
    frames: Vec<Vec<u8>>,
    repeat: u64,
) -> anyhow::Result<u64> {
    crate::netns::in_netns(netns, move || {
        let socket = UdpSocket::bind(bind).with_context(|| format!("bind {bind}"))?;
        let mut sent = 0;
        for _ in 0..repeat {
            for frame in &frames {
                socket
                    .send_to(frame, to)
                    .with_context(|| format!("send to {to}"))?;
                sent += 1;
            }
            // Gentle pacing: stay far below any queue limit.
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(sent)
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("sender thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_packets_parse_and_carry_seq() {
        let mut buf = vec![0u8; 200];
        let src = NodeId::from_bytes([1; 32]);
        let dst = NodeId::from_bytes([2; 32]);
        let len = build_data(&mut buf, &src, &dst, 42, 64);
        assert_eq!(len, HEADER_LEN + 64);
        let packet = OverlayPacket::new_checked(&buf[..len]).expect("long enough");
        let repr = OverlayRepr::parse(&packet).expect("valid");
        assert_eq!(
            (repr.src, repr.dst, repr.hop_limit),
            (src, dst, DEFAULT_HOP_LIMIT)
        );
        assert_eq!(&packet.payload()[..8], &42u64.to_be_bytes());
    }

    #[test]
    fn sink_counts_on_loopback() {
        let me = NodeId::from_bytes([3; 32]);
        let other = NodeId::from_bytes([4; 32]);
        let sink_socket = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
        let addr = sink_socket.local_addr().expect("bound");
        let counters = Arc::new(SinkCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (counters, stop) = (counters.clone(), stop.clone());
            std::thread::spawn(move || run_sink(&sink_socket, &me, 100, &counters, &stop))
        };
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
        let flow = DataFlow {
            src: other,
            dst: me,
            to: addr,
            count: 50,
            payload_len: 32,
            rate_pps: 0,
        };
        let report = send_data(&tx, &flow, &AtomicBool::new(false));
        assert_eq!(report.sent, 50);
        let mut buf = vec![0u8; 200];
        let len = build_data(&mut buf, &other, &other, 0, 32);
        tx.send_to(&buf[..len], addr).expect("send");
        tx.send_to(b"junk", addr).expect("send");
        assert!(crate::wait_until(Duration::from_secs(5), || counters
            .received
            .load(Ordering::Relaxed)
            >= 52));
        stop.store(true, Ordering::Relaxed);
        let report = thread.join().expect("no panic").expect("sink ok");
        assert_eq!(report.valid, 50);
        assert_eq!(report.wrong_dst, 1);
        assert_eq!(report.malformed, 1);
        assert_eq!(report.duplicates, 0);
        assert_eq!(report.hop_limits.get(&DEFAULT_HOP_LIMIT), Some(&50));
    }
}
