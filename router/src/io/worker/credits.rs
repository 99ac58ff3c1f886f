//! This worker's side of the XDP load-shedding credits
//! (`core::shed::Credits`): the window, the credits of packets read given
//! back after each batch, and those of packets lost before the socket taken
//! back when the queue is seen empty.

use super::State;
use crate::core::shed::{CreditConfig, Credits};
use crate::io::backlog::{WorkerCredits, socket_queue};

impl State {
    /// Data packets read from the network so far (what XDP may have
    /// counted for this worker): everything received but control packets
    /// and the local application's.
    pub(super) fn data_read(&self) -> u64 {
        let c = &self.counters;
        c.rx_packets
            .wrapping_sub(c.control_rx)
            .wrapping_sub(c.app_rx)
    }

    /// Sets the window from the socket's receive buffer and makes the
    /// credits this worker's.
    pub(super) fn take_credits(&mut self, credits: WorkerCredits) {
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
    pub(super) fn window_closed(&self) -> bool {
        self.credits.as_ref().is_some_and(|(credits, side)| {
            let unread = credits.admitted().wrapping_sub(side.consumed()) as i64;
            unread >= i64::from(credits.window())
        })
    }

    /// After a batch that read `read` data packets: returns their credits
    /// to XDP, and once per look interval takes back the credits of packets
    /// lost before the socket (an empty queue).
    pub(super) fn return_credits(&mut self, read: u64) {
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
}
