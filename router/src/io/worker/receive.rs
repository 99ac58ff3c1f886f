//! A receive completion: the buffer taken from the ring, the datagram
//! located in it and validated (`wire`), its fate asked of the
//! [`Forwarder`](crate::core::Forwarder) and the returned
//! [`Action`] executed and counted.

use std::net::SocketAddr;
use std::ops::Range;

use io_uring::{SubmissionQueue, Submitter, cqueue, opcode};

use super::gso::Item;
use super::{BUF_GROUP, ControlPacket, NAME_LEN, Op, RECVMSG_OUT_LEN, State, Upcall};
use crate::core::topology::Topology;
use crate::core::{Action, DropReason, Header, Install, NodeId, Origin};
use crate::io::ratelog::held_back;
use crate::io::topology::Hop;
use crate::wire::overlay::{FLAG_VIA, HEADER_LEN, HEADER_VIA_LEN};
use crate::wire::{OverlayError, OverlayPacket, PacketType};

/// Bytes the via field adds to a header.
const VIA_LEN: usize = HEADER_VIA_LEN - HEADER_LEN;
// The via of a local packet goes into the room before the datagram.
const _: () = assert!(super::PAYLOAD_OFFSET >= VIA_LEN);

/// A validated datagram and what to do with it.
struct Received<'t> {
    /// What the forwarder decided.
    action: Action<'t, Hop>,
    /// Its destination.
    dst: NodeId,
    /// The beacon it carries, if any.
    via: Option<NodeId>,
    /// A miss is to be looked up: the local application's packet, in a
    /// compact table (level above 0).
    locate: bool,
    /// Where the datagram is in its buffer.
    payload: Range<usize>,
    /// The sender's underlay address, if it could be read.
    source: Option<SocketAddr>,
}

/// The header fields the forwarder needs, from a datagram that passes
/// `wire` validation.
fn parse_header(datagram: &[u8]) -> Result<Header, OverlayError> {
    let packet = OverlayPacket::new_unchecked(datagram);
    packet.validate()?;
    Ok(Header {
        // validate() checked the type: the error is never returned.
        packet_type: PacketType::from_u8(packet.packet_type_raw()).ok_or(OverlayError::BadType)?,
        dst: packet.dst(),
        hop_limit: packet.hop_limit(),
        via: packet.via(),
    })
}

/// Where a multishot recvmsg put the datagram in its buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Located {
    /// The whole datagram, at this range of the buffer.
    Whole(Range<usize>),
    /// The datagram of `len` bytes did not fit (MSG_TRUNC).
    Truncated { len: usize },
}

/// Reads the `io_uring_recvmsg_out` header at the start of `buf` (the bytes
/// the completion reported) for a msghdr with `name_len` bytes of name and
/// no control data.
fn locate_payload(buf: &[u8], name_len: usize) -> Located {
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
        return Located::Truncated { len: payload_len };
    }
    let end = start + payload_len;
    if flags & (libc::MSG_TRUNC as usize) != 0 || end > buf.len() {
        return Located::Truncated { len: payload_len };
    }
    Located::Whole(start..end)
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

impl State {
    /// Queues the multishot receive if it is not armed and buffers exist.
    pub(super) fn arm_recv(&mut self, submitter: &Submitter<'_>, sq: &mut SubmissionQueue<'_>) {
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

    /// A receive completion: takes the buffer, and (unless draining:
    /// `table` is `None`) handles the datagram in it.
    pub(super) fn on_recv(
        &mut self,
        result: i32,
        flags: u32,
        table: Option<&Topology<Hop>>,
        submitter: &Submitter<'_>,
        sq: &mut SubmissionQueue<'_>,
    ) {
        let Some(bid) = self.take_received(result, flags) else {
            return;
        };
        let Some(table) = table else {
            self.bufs.give_back(bid); // draining
            return;
        };
        self.counters.rx_packets += 1;
        let Some(received) = self.classify(bid, result as usize, table) else {
            return; // dropped as truncated or malformed, counted
        };
        self.execute(received, bid, submitter, sq);
    }

    /// The buffer a receive completion filled, taken from the ring; `None`
    /// for a failed receive (counted; its buffer, if any, given back).
    fn take_received(&mut self, result: i32, flags: u32) -> Option<u16> {
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
            return None;
        }
        let Some(bid) = bid else {
            self.recv_errors += 1; // impossible with BUFFER_SELECT
            return None;
        };
        self.bufs.taken();
        self.recv_errors = 0;
        Some(bid)
    }

    /// Locates and validates the datagram in buffer `bid` (`len` bytes
    /// written) and asks the forwarder what to do with it. `None`: dropped
    /// (truncated or malformed), counted, buffer given back.
    fn classify<'t>(
        &mut self,
        bid: u16,
        len: usize,
        table: &'t Topology<Hop>,
    ) -> Option<Received<'t>> {
        let Some(buf) = self.bufs.received(bid, len) else {
            self.counters.drop_rx_truncated += 1;
            self.bufs.give_back(bid);
            return None;
        };
        let payload = match locate_payload(buf, NAME_LEN) {
            Located::Whole(range) => range,
            Located::Truncated { len } => {
                self.counters.rx_bytes += len as u64;
                self.counters.drop_rx_truncated += 1;
                self.bufs.give_back(bid);
                return None;
            }
        };
        self.counters.rx_bytes += payload.len() as u64;
        let source = source_addr(buf);
        let header = match parse_header(&buf[payload.clone()]) {
            Ok(header) => header,
            Err(e) => {
                self.counters.count_drop(DropReason::Malformed(e));
                self.bufs.give_back(bid);
                return None;
            }
        };
        // Control packets go up whoever sent them: no allowlist lookup.
        let origin = match (&self.app, source) {
            _ if header.packet_type == PacketType::Control => Origin::Unknown,
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
        Some(Received {
            action,
            dst: header.dst,
            via: header.via,
            locate: table.table.compact()
                && (origin == Origin::LocalApp || header.via.as_ref() == Some(table.table.local())),
            payload,
            source,
        })
    }

    /// Executes what the forwarder decided for the datagram in buffer
    /// `bid`, and counts its outcome.
    fn execute(
        &mut self,
        received: Received<'_>,
        bid: u16,
        submitter: &Submitter<'_>,
        sq: &mut SubmissionQueue<'_>,
    ) {
        let Received {
            action,
            dst,
            via,
            locate,
            payload,
            source,
        } = received;
        match action {
            Action::ToControl => self.hand_up(bid, payload, source),
            Action::Deliver => self.deliver(bid, payload, submitter, sq),
            Action::Forward {
                next_hop,
                hop,
                hop_limit,
                install,
                add_via,
            } => {
                let payload = match add_via {
                    Some(beacon) => self.insert_via(bid, payload, &beacon),
                    None => payload,
                };
                self.forward(bid, payload, hop, hop_limit, submitter, sq);
                let next_hop = *next_hop;
                let via = via.or(add_via);
                self.request_install(install, Upcall::Route { dst, next_hop, via });
            }
            Action::Miss { dst, install } => {
                self.request_install(install, Upcall::NoRoute { dst });
                if locate {
                    self.request_locate(dst);
                }
                if let Some(held) = self.drop_log.admit(self.batch_now) {
                    let why = if locate {
                        "no route to it here and its beacon not known yet: looked up"
                    } else {
                        "no route, and no neighbor is closer to it than this node"
                    };
                    log::warn!(
                        "worker {}: no route to {} ({why}): dropped; `xorlay stats` counts \
                         these in drop_no_route{}",
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

    /// Hands a control packet to the control thread (link-local: never
    /// forwarded); its buffer goes back to the ring either way.
    fn hand_up(&mut self, bid: u16, payload: Range<usize>, source: Option<SocketAddr>) {
        let handed = match (&self.upcalls, source) {
            (Some(upcalls), Some(from)) => {
                self.bufs.received(bid, payload.end).is_some_and(|buf| {
                    upcalls
                        .try_send(Upcall::Control(ControlPacket {
                            from,
                            bytes: buf[payload].to_vec(),
                        }))
                        .is_ok()
                })
            }
            _ => false,
        };
        if handed {
            self.counters.control_rx += 1;
        } else {
            self.counters.drop_control_full += 1;
        }
        self.bufs.give_back(bid);
    }

    /// Counts a packet for this node and sends it to the local
    /// application, if there is one.
    fn deliver(
        &mut self,
        bid: u16,
        payload: Range<usize>,
        submitter: &Submitter<'_>,
        sq: &mut SubmissionQueue<'_>,
    ) {
        match self.app.as_ref().map(|(hop, _)| hop.clone()) {
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
        }
    }

    /// Writes the decremented hop limit into the datagram and sends it on
    /// to `hop`: with its group after the batch (GSO), or now.
    fn forward(
        &mut self,
        bid: u16,
        payload: Range<usize>,
        hop: &Hop,
        hop_limit: u8,
        submitter: &Submitter<'_>,
        sq: &mut SubmissionQueue<'_>,
    ) {
        if let Some(buf) = self.bufs.received(bid, payload.end) {
            OverlayPacket::new_unchecked(&mut buf[payload.clone()]).set_hop_limit(hop_limit);
        }
        if self.gso {
            // Sent (and counted) with its group after the batch.
            let item = Item {
                bid,
                start: payload.start,
                len: payload.len(),
            };
            self.batcher.push(hop, item);
        } else {
            self.forward_one(bid, payload, hop, submitter, sq);
        }
    }

    /// Writes `beacon` into the via field of the datagram at `payload` in
    /// buffer `bid`: over the one it has, or else (a packet of the local
    /// application) the fixed header moves [`VIA_LEN`] bytes toward the
    /// buffer's start, into the room the receive header and the sender's
    /// name took, and the via goes between it and the payload. Returns
    /// where the datagram now is.
    fn insert_via(&mut self, bid: u16, payload: Range<usize>, beacon: &NodeId) -> Range<usize> {
        let Some(buf) = self.bufs.received(bid, payload.end) else {
            return payload;
        };
        let mut packet = OverlayPacket::new_unchecked(&mut buf[payload.clone()]);
        if packet.flags() & FLAG_VIA != 0 {
            // Validated: the via field is there.
            let _ = packet.set_via(Some(beacon));
            return payload;
        }
        // The receive header and the sender's name are always before it
        // (PAYLOAD_OFFSET >= VIA_LEN, asserted); without that room the
        // packet goes without a via.
        let Some(start) = payload.start.checked_sub(VIA_LEN) else {
            return payload;
        };
        buf.copy_within(payload.start..payload.start + HEADER_LEN, start);
        let mut packet = OverlayPacket::new_unchecked(&mut buf[start..payload.end]);
        packet.set_flags(packet.flags() | FLAG_VIA);
        match packet.set_via(Some(beacon)) {
            Ok(()) => start..payload.end,
            // Never: the buffer holds the fixed header and the via's room.
            Err(_) => payload,
        }
    }

    /// Asks the control thread to look `dst` up (location service), at
    /// most once per destination per interval and under a rate limit.
    fn request_locate(&mut self, dst: NodeId) {
        if self.locate_filter.admit(self.batch_now, &dst, None).is_ok()
            && let Some(upcalls) = &self.upcalls
            && upcalls.try_send(Upcall::Locate { dst }).is_err()
        {
            self.counters.install_dropped += 1;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::worker::PAYLOAD_OFFSET;

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
            Located::Whole(PAYLOAD_OFFSET..PAYLOAD_OFFSET + 5)
        );
        let empty = recvmsg_out(NAME_LEN, b"", 0, 0);
        assert_eq!(
            locate_payload(&empty, NAME_LEN),
            Located::Whole(PAYLOAD_OFFSET..PAYLOAD_OFFSET)
        );
    }

    #[test]
    fn truncation_is_reported() {
        let b = recvmsg_out(NAME_LEN, b"hel", libc::MSG_TRUNC as u32, 3000);
        assert_eq!(
            locate_payload(&b, NAME_LEN),
            Located::Truncated { len: 3000 }
        );
        // Claimed length beyond what was written, even without the flag.
        let b = recvmsg_out(NAME_LEN, b"hel", 0, 5);
        assert_eq!(locate_payload(&b, NAME_LEN), Located::Truncated { len: 5 });
        // Shorter than the header.
        assert_eq!(
            locate_payload(&[0u8; 10], NAME_LEN),
            Located::Truncated { len: 0 }
        );
    }
}
