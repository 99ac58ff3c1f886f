//! Sends: one datagram from its receive buffer, or a batch's group of
//! forwards to one next hop as one UDP GSO send, and their completions,
//! which give the buffers back (a refused GSO send goes out one by one).

use std::io;
use std::ops::Range;

use io_uring::{SubmissionQueue, Submitter, opcode};
use socket2::SockAddr;

use super::gso::Group;
use super::{Op, State};

impl State {
    pub(super) fn on_send(&mut self, slot: u16, result: i32) {
        if !self.slots.release(slot) {
            debug_assert!(false, "send completion for idle slot {slot}");
            return;
        }
        self.send_completed();
        if result < 0 && result != -libc::ECANCELED {
            self.counters.tx_errors += 1;
        }
        self.bufs.give_back(slot);
    }

    /// Sends one forwarded datagram and counts the outcome.
    pub(super) fn forward_one(
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
    pub(super) fn send_grouped(&mut self, submitter: &Submitter<'_>, sq: &mut SubmissionQueue<'_>) {
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
        self.send_queued();
        let n = group.items.len() as u64;
        self.counters.forwarded += n;
        self.counters.tx_bytes += group.total as u64;
        self.counters.tx_gso_sends += 1;
        self.counters.tx_gso_segments += n;
    }

    /// A GSO send completed. If the kernel refused GSO on this path (no
    /// `UDP_SEGMENT` support, or a segment over the path MTU), its
    /// datagrams go out one by one and this worker stops grouping.
    pub(super) fn on_gso_send(
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
        self.send_completed();
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

    /// Queues a send of `range` of buffer `bid` to `dst` from slot `bid`.
    /// On `false` nothing was queued and the caller still owns the buffer.
    pub(super) fn send(
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
    pub(super) fn send_from(
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
        self.send_queued();
        true
    }

    /// Counts a send queued (it pins its buffers until its completion).
    fn send_queued(&mut self) {
        // At most one send per buffer or GSO slot: far below u32::MAX.
        self.sends_in_flight = self.sends_in_flight.saturating_add(1);
        self.sends_queued = self.sends_queued.saturating_add(1);
    }

    /// Counts a send completed: never more than were queued.
    fn send_completed(&mut self) {
        let left = self.sends_in_flight.checked_sub(1);
        debug_assert!(
            left.is_some(),
            "worker {}: a send completed with none in flight",
            self.index
        );
        self.sends_in_flight = left.unwrap_or(0);
    }
}
