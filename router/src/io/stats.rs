//! Counters of the data plane, written by one worker each and read by the
//! admin socket. Each worker owns one `WorkerStats`; its thread is the only
//! writer, so updates are plain relaxed stores of locally summed values.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::core::DropReason;
use crate::wire::OverlayError;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// A snapshot of one worker's counters (or their sum).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
        pub struct WorkerCounters {
            $($(#[$doc])* pub $name: u64,)*
        }

        /// A worker's live counters.
        #[derive(Debug, Default)]
        #[repr(align(128))] // own cache lines: no false sharing between workers
        pub struct WorkerStats {
            $($name: AtomicU64,)*
        }

        impl WorkerStats {
            /// Reads all counters (each individually atomic).
            pub fn snapshot(&self) -> WorkerCounters {
                WorkerCounters { $($name: self.$name.load(Ordering::Relaxed),)* }
            }

            /// Publishes counters the worker has summed locally. Only the
            /// owning worker calls this, so load+store cannot lose updates.
            pub fn publish(&self, local: &WorkerCounters) {
                $(self.$name.store(local.$name, Ordering::Relaxed);)*
            }
        }

        impl core::ops::AddAssign for WorkerCounters {
            fn add_assign(&mut self, other: WorkerCounters) {
                $(self.$name += other.$name;)*
            }
        }
    };
}

counters! {
    /// Datagrams received on the overlay socket.
    rx_packets,
    /// Bytes of those datagrams (UDP payload).
    rx_bytes,
    /// Packets addressed to this node.
    delivered,
    /// Packets sent on to a neighbor.
    forwarded,
    /// Bytes forwarded.
    tx_bytes,
    /// Submission batches of sends.
    tx_batches,
    /// UDP GSO sends (each carries several forwarded datagrams).
    tx_gso_sends,
    /// Forwarded datagrams that went out in GSO sends.
    tx_gso_segments,
    /// GSO sends the kernel refused; their datagrams went out one by one.
    tx_gso_refused,
    /// Times the worker found its socket queue empty while XDP counted
    /// packets for it unread: credits of packets lost before the socket,
    /// taken back (docs/xdp.md, "Load shedding").
    credit_resyncs,
    /// Dropped: shorter than the overlay header.
    drop_truncated,
    /// Dropped: bad magic.
    drop_bad_magic,
    /// Dropped: unsupported version.
    drop_bad_version,
    /// Dropped: unknown packet type.
    drop_bad_type,
    /// Dropped: payload length mismatch.
    drop_bad_length,
    /// Dropped: hop limit 0 on arrival.
    drop_hop_limit_zero,
    /// Dropped: hop limit would reach 0.
    drop_hop_limit_exceeded,
    /// Dropped: no neighbor closer to the destination.
    drop_no_route,
    /// Dropped: the datagram did not fit a receive buffer.
    drop_rx_truncated,
    /// Dropped: no free send slot (send queue full).
    drop_tx_full,
    /// Sends the kernel reported failed.
    tx_errors,
    /// Receives that found the provided-buffer ring empty.
    rx_no_buffer,
    /// Control packets handed to the control thread.
    control_rx,
    /// Control packets dropped: the control thread's queue was full.
    drop_control_full,
    /// Dropped: a data packet from an address without an authenticated session.
    drop_not_neighbor,
    /// Data packets originated by the local application (`dataplane.app`).
    app_rx,
    /// Route-cache install requests sent to the control thread.
    install_requests,
    /// Install requests not made: over the rate limit.
    install_limited,
    /// Install requests dropped: the control thread's queue was full.
    install_dropped,
}

impl WorkerCounters {
    /// Counts a drop under its reason.
    pub fn count_drop(&mut self, reason: DropReason) {
        let counter = match reason {
            DropReason::Malformed(OverlayError::Truncated) => &mut self.drop_truncated,
            DropReason::Malformed(OverlayError::BadMagic) => &mut self.drop_bad_magic,
            DropReason::Malformed(OverlayError::BadVersion) => &mut self.drop_bad_version,
            DropReason::Malformed(OverlayError::BadType) => &mut self.drop_bad_type,
            DropReason::Malformed(OverlayError::BadLength) => &mut self.drop_bad_length,
            DropReason::Malformed(OverlayError::HopLimitZero) => &mut self.drop_hop_limit_zero,
            DropReason::HopLimitExceeded => &mut self.drop_hop_limit_exceeded,
            DropReason::NoRoute => &mut self.drop_no_route,
            DropReason::NotNeighbor => &mut self.drop_not_neighbor,
        };
        *counter += 1;
    }

    /// The sum of every outcome a received datagram can have; in a
    /// published snapshot it equals `rx_packets`.
    pub fn outcomes(&self) -> u64 {
        self.delivered
            + self.forwarded
            + self.control_rx
            + self.drop_malformed()
            + self.drop_hop_limit_exceeded
            + self.drop_no_route
            + self.drop_not_neighbor
            + self.drop_rx_truncated
            + self.drop_tx_full
            + self.drop_control_full
    }

    /// All drops that a malformed packet can cause.
    pub fn drop_malformed(&self) -> u64 {
        self.drop_truncated
            + self.drop_bad_magic
            + self.drop_bad_version
            + self.drop_bad_type
            + self.drop_bad_length
            + self.drop_hop_limit_zero
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drop_reason_has_its_own_counter() {
        let mut reasons: Vec<DropReason> = OverlayError::ALL
            .iter()
            .map(|e| DropReason::Malformed(*e))
            .collect();
        reasons.push(DropReason::HopLimitExceeded);
        reasons.push(DropReason::NoRoute);
        reasons.push(DropReason::NotNeighbor);
        let mut previous = WorkerCounters::default();
        for reason in reasons {
            let mut c = previous;
            c.count_drop(reason);
            let before = serde_json::to_value(previous).expect("serializable");
            let after = serde_json::to_value(c).expect("serializable");
            let changed: Vec<_> = after
                .as_object()
                .expect("struct")
                .iter()
                .filter(|(k, v)| before.get(k.as_str()) != Some(v))
                .map(|(k, _)| k.clone())
                .collect();
            assert_eq!(changed.len(), 1, "{reason:?} changed {changed:?}");
            previous = c;
        }
    }

    #[test]
    fn publish_then_snapshot() {
        let stats = WorkerStats::default();
        let local = WorkerCounters {
            rx_packets: 3,
            forwarded: 2,
            ..Default::default()
        };
        stats.publish(&local);
        assert_eq!(stats.snapshot(), local);
    }
}
