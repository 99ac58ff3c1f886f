//! The worker's loop: one `io_uring_enter` per batch of completions, the
//! batch handled, counters published; on stop, everything in flight
//! cancelled and drained, then the memory freed in an order the kernel
//! allows.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use io_uring::types::{CancelBuilder, SubmitArgs, Timespec};
use io_uring::{IoUring, SubmissionQueue, Submitter, cqueue, squeue, types};
use socket2::Socket;

use super::pool::{BufRing, GsoSlots, SendSlots};
use super::setup::{open_buffers, open_ring, open_socket};
use super::{
    BUF_GROUP, Batcher, DRAIN_TIMEOUT, DROP_LOG_BURST, DROP_LOG_WINDOW, GSO_SLOTS, LOCATE_RATE,
    NAME_LEN, Op, RECV_ERRORS_MAX, State, UpcallSender, WAIT_SLICE, WAIT_SLICE_CLOSED,
    WorkerConfig, WorkerError, WorkerLinks,
};
use crate::core::Forwarder;
use crate::core::install::InstallFilter;
use crate::core::topology::{Topology, socket_form};
use crate::io::ratelog::LogLimit;
use crate::io::stats::{WorkerCounters, WorkerStats};
use crate::io::topology::{Hop, SharedTable, hop_for};

/// Errors of `io_uring_enter` after which the loop just carries on: a
/// timeout, a signal, or a full completion queue that draining resolves.
pub(super) fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN)
    )
}

/// Everything a worker thread owns. Created and used on that thread only.
pub(super) struct Engine {
    /// The ring; while it is split, `state` is borrowed beside it.
    ring: IoUring,
    pub(super) state: State,
    table: SharedTable,
    stats: Arc<WorkerStats>,
    stop: Arc<AtomicBool>,
    pub(super) local_addr: SocketAddr,
}

impl Engine {
    /// Opens the socket, the ring and the buffers and builds the state.
    pub(super) fn new(
        index: usize,
        config: &WorkerConfig,
        links: WorkerLinks,
    ) -> Result<Engine, WorkerError> {
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
        let bufs = open_buffers(config, &ring)?;
        let mut state = State::new(index, config, socket, bufs, upcalls);
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
    pub(super) fn run(mut self) -> Result<(), WorkerError> {
        let served = self.serve();
        let drained = self.drain();
        self.state.publish(&self.stats);
        let freed = self.teardown(drained.is_ok());
        served.and(drained).and(freed)
    }

    /// The loop: one enter per batch (submit the sends and the re-armed
    /// receive queued by the previous batch, wait for completions), then
    /// the batch, until `stop` or an error.
    fn serve(&mut self) -> Result<(), WorkerError> {
        let timeout = Timespec::from(WAIT_SLICE);
        let args = SubmitArgs::new().timespec(&timeout);
        let timeout_closed = Timespec::from(WAIT_SLICE_CLOSED);
        let args_closed = SubmitArgs::new().timespec(&timeout_closed);
        let (submitter, mut sq, mut cq) = self.ring.split();
        let state = &mut self.state;
        state.arm_recv(&submitter, &mut sq);
        loop {
            let wait = if state.window_closed() {
                &args_closed
            } else {
                &args
            };
            state.enter(&submitter, &mut sq, wait)?;
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            state.batch(&self.table, &submitter, &mut sq, &mut cq);
            state.publish(&self.stats);
            state.check_health()?;
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
    /// The state of a worker that owns `socket` and `bufs` (registered).
    fn new(
        index: usize,
        config: &WorkerConfig,
        socket: Socket,
        bufs: BufRing,
        upcalls: Option<UpcallSender>,
    ) -> State {
        // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
        let mut recv_msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_msg.msg_namelen = NAME_LEN as libc::socklen_t;
        let fd = types::Fd(std::os::fd::AsRawFd::as_raw_fd(&socket));
        State {
            index,
            socket,
            fd,
            slots: SendSlots::new(bufs.count()),
            gso_slots: GsoSlots::new(GSO_SLOTS.min(bufs.count())),
            batcher: Batcher::default(),
            gso: config.dataplane.gso,
            bufs,
            recv_msg,
            app: config.dataplane.app.map(|addr| {
                (
                    hop_for(&config.listen, addr),
                    socket_form(&config.listen, addr),
                )
            }),
            // Install requests need somewhere to go.
            forwarder: Forwarder::new(if upcalls.is_some() {
                config.dataplane.installs_per_sec
            } else {
                0
            }),
            upcalls,
            batch_now: Instant::now(),
            drop_log: LogLimit::new(DROP_LOG_WINDOW, DROP_LOG_BURST),
            locate_filter: InstallFilter::new(LOCATE_RATE, LOCATE_RATE / 10),
            recv_armed: false,
            sends_in_flight: 0,
            sends_queued: 0,
            recv_errors: 0,
            fatal: None,
            credits: None,
            counters: WorkerCounters::default(),
        }
    }

    /// One `io_uring_enter`: submits what is queued and waits up to `wait`
    /// for a completion. Transient errors (a timeout, a signal) are not
    /// errors.
    fn enter(
        &mut self,
        submitter: &Submitter<'_>,
        sq: &mut SubmissionQueue<'_>,
        wait: &SubmitArgs<'_, '_>,
    ) -> Result<(), WorkerError> {
        sq.sync();
        let entered = submitter.submit_with_args(1, wait);
        sq.sync();
        match entered {
            Ok(_) => Ok(()),
            Err(e) if is_transient(&e) => Ok(()),
            Err(source) => Err(WorkerError::Io {
                index: self.index,
                what: "io_uring_enter",
                source,
            }),
        }
    }

    /// Handles the completions that arrived, on one table snapshot, then
    /// sends the grouped forwards, closes the batch and returns credits.
    fn batch(
        &mut self,
        table: &SharedTable,
        submitter: &Submitter<'_>,
        sq: &mut SubmissionQueue<'_>,
        cq: &mut cqueue::CompletionQueue<'_>,
    ) {
        // The table is loaded after the completion snapshot, so a packet
        // sent after a table store is routed by that table or a newer one.
        cq.sync();
        let guard = table.load();
        let table: &Topology<Hop> = &guard;
        self.batch_now = Instant::now();
        let data_before = self.data_read();
        for cqe in &mut *cq {
            self.complete(&cqe, Some(table), submitter, sq);
        }
        cq.sync(); // hand the completion slots back before waiting again
        drop(guard);
        self.send_grouped(submitter, sq);
        self.end_batch(submitter, sq);
        self.return_credits(self.data_read().wrapping_sub(data_before));
    }

    /// Publishes the counters summed so far: between batches, so every
    /// datagram received has exactly one outcome.
    fn publish(&self, stats: &WorkerStats) {
        debug_assert_eq!(
            self.counters.rx_packets,
            self.counters.outcomes(),
            "worker {}: received != sum of outcomes in {:?}",
            self.index,
            self.counters
        );
        stats.publish(&self.counters);
    }

    /// An error that stops the worker: a submission that failed mid-batch,
    /// or [`RECV_ERRORS_MAX`] failed receives in a row.
    fn check_health(&mut self) -> Result<(), WorkerError> {
        if let Some(source) = self.fatal.take() {
            return Err(WorkerError::Io {
                index: self.index,
                what: "io_uring_enter (mid-batch)",
                source,
            });
        }
        if self.recv_errors >= RECV_ERRORS_MAX {
            return Err(WorkerError::Io {
                index: self.index,
                what: "multishot recvmsg",
                source: io::Error::other(format!("{RECV_ERRORS_MAX} receives in a row failed")),
            });
        }
        Ok(())
    }

    /// Pushes an SQE, flushing the queue to the kernel once if it is full.
    pub(super) fn push(
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
    pub(super) fn flush(&mut self, submitter: &Submitter<'_>, sq: &mut SubmissionQueue<'_>) {
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
    pub(super) fn end_batch(&mut self, submitter: &Submitter<'_>, sq: &mut SubmissionQueue<'_>) {
        self.bufs.publish();
        self.arm_recv(submitter, sq);
        if self.sends_queued > 0 {
            self.counters.tx_batches += 1;
            self.sends_queued = 0;
        }
    }

    /// Handles one completion. `table` is `None` while draining: received
    /// datagrams are then discarded uncounted and nothing new is queued.
    pub(super) fn complete(
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_enter_errors() {
        for code in [libc::ETIME, libc::EINTR, libc::EBUSY, libc::EAGAIN] {
            assert!(is_transient(&io::Error::from_raw_os_error(code)), "{code}");
        }
        assert!(!is_transient(&io::Error::from_raw_os_error(libc::EBADF)));
    }
}
