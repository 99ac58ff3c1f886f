//! The "what a user writes by hand" baseline: a plain userspace UDP relay.
//! One socket, one thread: `recvmmsg` a batch, `sendmmsg` it on to a fixed
//! next hop. No parsing, no decision, no allocation per packet.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;

use crate::loadgen::BATCH_MAX;

const BUF: usize = 2048;

/// Counters of a running relay.
#[derive(Debug, Default)]
pub struct RelayCounters {
    /// Datagrams received.
    pub received: AtomicU64,
    /// Datagrams the kernel accepted for sending.
    pub sent: AtomicU64,
}

/// Relays every datagram arriving on `socket` to `to` until `stop` is set.
pub fn run(
    socket: &UdpSocket,
    to: SocketAddr,
    counters: &RelayCounters,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .context("relay read timeout")?;
    let out = UdpSocket::bind(SocketAddr::new(
        socket.local_addr().context("relay address")?.ip(),
        0,
    ))
    .context("relay send socket")?;
    out.connect(to).with_context(|| format!("connect {to}"))?;
    let mut bufs = vec![[0u8; BUF]; BATCH_MAX];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: BUF,
        })
        .collect();
    // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
    let mut rx: Vec<libc::mmsghdr> = (0..BATCH_MAX)
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    // SAFETY: as above.
    let mut tx: Vec<libc::mmsghdr> = (0..BATCH_MAX)
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    let mut tx_iovs = iovs.clone();
    for (msg, iov) in rx.iter_mut().zip(iovs.iter_mut()) {
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
    }
    for (msg, iov) in tx.iter_mut().zip(tx_iovs.iter_mut()) {
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
    }
    let (rfd, wfd) = (socket.as_raw_fd(), out.as_raw_fd());
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: rx holds BATCH_MAX headers pointing at live buffers.
        let n = unsafe {
            libc::recvmmsg(
                rfd,
                rx.as_mut_ptr(),
                BATCH_MAX as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue; // timeout or EINTR: check `stop`
        }
        let n = (n as usize).min(BATCH_MAX);
        counters.received.fetch_add(n as u64, Ordering::Relaxed);
        for i in 0..n {
            tx_iovs[i].iov_len = (rx[i].msg_len as usize).min(BUF);
            tx[i].msg_hdr.msg_iov = &mut tx_iovs[i];
        }
        let mut done = 0;
        while done < n {
            // SAFETY: tx[done..n] point at the received buffers.
            let m = unsafe { libc::sendmmsg(wfd, tx[done..].as_mut_ptr(), (n - done) as u32, 0) };
            if m <= 0 {
                break; // drop the rest of the batch, as a simple relay would
            }
            done += m as usize;
        }
        counters.sent.fetch_add(done as u64, Ordering::Relaxed);
        for iov in tx_iovs.iter_mut().take(n) {
            iov.iov_len = BUF;
        }
    }
    Ok(())
}
