//! The per-packet step of the data plane, pure: what to do with a valid
//! overlay packet, given its header, where it came from and the table.
//!
//! - [`route`] looks `dst` up: this node, the strictly closer next hop, or
//!   a miss.
//! - [`decide`] adds the hop-limit check: the fate of a data packet.
//! - [`Forwarder::handle`] is the whole step a worker takes per packet
//!   (control or data, the local application or a neighbor, the route, the
//!   hop limit, the install policy) and returns an [`Action`] for the worker
//!   to execute and count, in the shape of boringtun's `TunnResult`.

use std::time::Instant;

use super::install::{InstallFilter, Refusal};
use super::table::NextHopTable;
use crate::id::NodeId;
use crate::wire::{OverlayError, PacketType};

/// Where a destination is, as the table sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a, A> {
    /// The destination is this node.
    Local,
    /// The routing protocol's next hop to the destination, or else the
    /// neighbor XOR-closest to it, strictly closer to it than this node.
    Next {
        /// The neighbor's ID.
        next_hop: &'a NodeId,
        /// How to reach it.
        hop: &'a A,
    },
    /// No neighbor is strictly closer to the destination than this node.
    Miss,
}

/// Looks `dst` up in `table`: delivered here; forwarded on the routing
/// protocol's route (`core::routing`, loop-free by its feasibility
/// condition) if there is one; else forwarded to the neighbor XOR-closest to
/// it if that one is strictly closer than this node (greedy routing makes
/// progress on every hop); else a miss.
pub fn route<'a, A>(table: &'a NextHopTable<A>, dst: &NodeId) -> Route<'a, A> {
    route_via(table, dst, None)
}

/// [`route`] for a packet that carries `via`, its destination's nearest
/// beacon: without a route to `dst`, it goes on `via`'s route (the
/// location service's way out of the cluster); without either, greedy XOR
/// applies, except in a compact table (level above 0), where it would
/// lead into dead ends: a miss, so the destination is looked up.
pub fn route_via<'a, A>(
    table: &'a NextHopTable<A>,
    dst: &NodeId,
    via: Option<&NodeId>,
) -> Route<'a, A> {
    if dst == table.local() {
        return Route::Local;
    }
    if let Some((next_hop, hop)) = table.exact(dst) {
        return Route::Next { next_hop, hop };
    }
    if let Some((next_hop, hop)) = via.and_then(|v| table.exact(v)) {
        return Route::Next { next_hop, hop };
    }
    if table.compact() {
        return Route::Miss;
    }
    match table.closest(dst) {
        Some((next_hop, hop)) if next_hop.distance(dst) < table.local().distance(dst) => {
            Route::Next { next_hop, hop }
        }
        _ => Route::Miss,
    }
}

/// What to do with a valid data packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'a, A> {
    /// The destination is this node.
    Deliver,
    /// Send to this next hop, with the hop limit decremented.
    Forward {
        /// The neighbor's ID.
        next_hop: &'a NodeId,
        /// How to reach it.
        hop: &'a A,
    },
    /// Discard, counted under this reason.
    Drop(DropReason),
}

/// Why a packet was discarded. `Copy`, so it feeds counters directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The bytes are not a valid overlay packet (found by `wire`, before
    /// [`Forwarder::handle`]).
    Malformed(OverlayError),
    /// Forwarding would bring the hop limit to zero.
    HopLimitExceeded,
    /// No neighbor is strictly closer to the destination than this node.
    NoRoute,
    /// A data packet from an underlay address without an authenticated
    /// session (and not from the local application).
    NotNeighbor,
}

/// Decides the fate of a data packet for `dst` arriving with `hop_limit`.
///
/// Delivered when `dst` is this node, whatever the hop limit. Otherwise
/// dropped if the decremented hop limit would reach zero, else forwarded as
/// [`route`] says (or dropped as [`DropReason::NoRoute`] on a miss).
pub fn decide<'a, A>(table: &'a NextHopTable<A>, dst: &NodeId, hop_limit: u8) -> Verdict<'a, A> {
    decide_via(table, dst, None, hop_limit)
}

/// [`decide`] for a packet that carries `via` ([`route_via`]).
pub fn decide_via<'a, A>(
    table: &'a NextHopTable<A>,
    dst: &NodeId,
    via: Option<&NodeId>,
    hop_limit: u8,
) -> Verdict<'a, A> {
    match route_via(table, dst, via) {
        Route::Local => Verdict::Deliver,
        _ if hop_limit <= 1 => Verdict::Drop(DropReason::HopLimitExceeded),
        Route::Next { next_hop, hop } => Verdict::Forward { next_hop, hop },
        Route::Miss => Verdict::Drop(DropReason::NoRoute),
    }
}

/// The header fields of a validated overlay packet that decide its fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Control or data.
    pub packet_type: PacketType,
    /// The destination node.
    pub dst: NodeId,
    /// The hop limit as received.
    pub hop_limit: u8,
    /// The destination's nearest beacon, if the packet carries it.
    pub via: Option<NodeId>,
}

/// Where a packet came from, as the worker's socket and the published
/// topology tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The local application (`dataplane.app`): its data packets are
    /// originated by this node, routed without the neighbor check.
    LocalApp,
    /// A neighbor with an authenticated session (the topology accepts it).
    Neighbor,
    /// Anyone else, or an address the worker could not read.
    Unknown,
}

/// Whether to ask the control thread to cache a route (or its absence) in
/// XDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// Ask now (the request is recorded as made).
    Request,
    /// Not asked: over the rate limit (counted as `install_limited`).
    Limited,
    /// Not asked: installs are off, or the same request went out recently.
    Skip,
}

/// What the worker does with one packet. Each variant is one outcome, so
/// the worker counts exactly one per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a, A> {
    /// A control packet: to the control thread. Control packets are
    /// link-local, never forwarded, whoever sent them.
    ToControl,
    /// For this node: to the local application, if any.
    Deliver,
    /// Send on to `hop`, with `hop_limit` written into the header.
    Forward {
        /// The neighbor's ID.
        next_hop: &'a NodeId,
        /// How to reach it.
        hop: &'a A,
        /// The hop limit to send with: already decremented, at least 1.
        hop_limit: u8,
        /// Whether to ask for `dst` -> `next_hop` in the XDP route cache.
        install: Install,
        /// A beacon to write into the packet's via field first (inserted,
        /// or replacing the one it has): its destination has no route
        /// here, the location service knows its beacon, and the packet is
        /// this node's own (local application) or names this node as its
        /// via.
        add_via: Option<NodeId>,
    },
    /// No route: drop it, counted as [`DropReason::NoRoute`].
    Miss {
        /// The destination nobody is closer to.
        dst: NodeId,
        /// Whether to ask for a negative entry in the XDP route cache.
        install: Install,
    },
    /// Discard, counted under this reason.
    Drop(DropReason),
}

/// The per-packet policy of one worker, with the only state it keeps: the
/// install filter.
#[derive(Debug)]
pub struct Forwarder {
    /// `None`: no install requests are made.
    installs: Option<InstallFilter>,
}

impl Forwarder {
    /// A forwarder asking for at most `install_rate` route-cache installs
    /// per second (bursts of a tenth of that); 0: none.
    pub fn new(install_rate: u32) -> Forwarder {
        Forwarder {
            installs: (install_rate > 0)
                .then(|| InstallFilter::new(install_rate, install_rate.div_ceil(10).max(1))),
        }
    }

    /// The fate of one valid packet with `header`, from `origin`, at `now`
    /// (the time of the worker's batch), routed by `table`.
    pub fn handle<'a, A>(
        &mut self,
        now: Instant,
        header: &Header,
        origin: Origin,
        table: &'a NextHopTable<A>,
    ) -> Action<'a, A> {
        if header.packet_type == PacketType::Control {
            return Action::ToControl;
        }
        if origin == Origin::Unknown {
            return Action::Drop(DropReason::NotNeighbor);
        }
        let dst = header.dst;
        // Looked up only for the two cases below (transit packets pay
        // nothing extra: route_via looks `dst` up once).
        let unrouted = || table.exact(&dst).is_none();
        let add_via = match header.via {
            // A packet of our own without a via, for a destination outside
            // the cluster: the location service's answer goes in.
            None if origin == Origin::LocalApp && unrouted() => table.via_of(&dst).copied(),
            // A packet whose via is this node, which has no route to its
            // destination any more (the destination's nearest beacon
            // changed, its sources do not know yet): this node's own
            // location service answer, if newer, replaces it.
            Some(v) if v == *table.local() && unrouted() => {
                table.via_of(&dst).copied().filter(|new| *new != v)
            }
            _ => None,
        };
        let via = add_via.or(header.via);
        // A rewritten via is the workers' job on every packet: XDP cannot
        // rewrite it, so no cache entry.
        let rewrite = add_via.is_some() && header.via.is_some();
        match decide_via(table, &dst, via.as_ref(), header.hop_limit) {
            Verdict::Deliver => Action::Deliver,
            Verdict::Forward { next_hop, hop } => Action::Forward {
                next_hop,
                hop,
                // decide() forwards only with hop_limit > 1.
                hop_limit: header.hop_limit - 1,
                install: if rewrite {
                    Install::Skip
                } else {
                    self.install(now, &dst, Some(*next_hop))
                },
                add_via,
            },
            Verdict::Drop(DropReason::NoRoute) => Action::Miss {
                dst,
                install: self.install(now, &dst, None),
            },
            Verdict::Drop(reason) => Action::Drop(reason),
        }
    }

    /// Whether to ask for `dst` -> `next_hop` (or no route) now.
    fn install(&mut self, now: Instant, dst: &NodeId, next_hop: Option<NodeId>) -> Install {
        let Some(installs) = &mut self.installs else {
            return Install::Skip;
        };
        match installs.admit(now, dst, next_hop) {
            Ok(()) => Install::Request,
            Err(Refusal::Repeat) => Install::Skip,
            Err(Refusal::Limited) => Install::Limited,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn id(first: u8) -> NodeId {
        let mut b = [0u8; 32];
        b[0] = first;
        NodeId::from_bytes(b)
    }

    fn table(local: u8, neighbors: &[u8]) -> NextHopTable<u8> {
        NextHopTable::new(id(local), neighbors.iter().map(|n| (id(*n), *n))).expect("valid")
    }

    #[test]
    fn delivers_to_self_even_at_hop_limit_one() {
        let t = table(0x10, &[0x20]);
        assert_eq!(decide(&t, &id(0x10), 1), Verdict::Deliver);
    }

    #[test]
    fn forwards_to_strictly_closer_neighbor() {
        let t = table(0x80, &[0x01, 0x40, 0x70]);
        // dst 0x41: distances 0x40, 0x01, 0x31 from neighbors; 0xc1 from local.
        match decide(&t, &id(0x41), 64) {
            Verdict::Forward { next_hop, hop } => {
                assert_eq!(*next_hop, id(0x40));
                assert_eq!(*hop, 0x40);
            }
            other => panic!("expected forward, got {other:?}"),
        }
    }

    #[test]
    fn no_route_when_no_neighbor_is_closer() {
        let t = table(0x40, &[0x80, 0xc0]);
        assert_eq!(
            decide(&t, &id(0x41), 64),
            Verdict::Drop(DropReason::NoRoute)
        );
        let empty = table(0x40, &[]);
        assert_eq!(
            decide(&empty, &id(0x41), 64),
            Verdict::Drop(DropReason::NoRoute)
        );
    }

    #[test]
    fn hop_limit_exceeded_before_forwarding() {
        let t = table(0x80, &[0x40]);
        assert_eq!(
            decide(&t, &id(0x41), 1),
            Verdict::Drop(DropReason::HopLimitExceeded)
        );
        assert!(matches!(decide(&t, &id(0x41), 2), Verdict::Forward { .. }));
    }

    #[test]
    fn route_is_local_next_or_miss() {
        let t = table(0x80, &[0x01, 0x40]);
        assert_eq!(route(&t, &id(0x80)), Route::Local);
        assert_eq!(
            route(&t, &id(0x41)),
            Route::Next {
                next_hop: &id(0x40),
                hop: &0x40
            }
        );
        // 0x81: local is at 0x01, the neighbors at 0x80 and 0xc1.
        assert_eq!(route(&t, &id(0x81)), Route::Miss);
        assert_eq!(route(&table(0x80, &[]), &id(0x41)), Route::Miss);
    }

    fn header(packet_type: PacketType, dst: u8, hop_limit: u8) -> Header {
        Header {
            packet_type,
            dst: id(dst),
            hop_limit,
            via: None,
        }
    }

    /// Compact routing: a packet without a route to its destination goes
    /// on its via's route; the local application's packets get the
    /// location service's via; no greedy fallback in a compact table.
    #[test]
    fn via_routes_and_the_location_services_answers() {
        let mut t = table(0x80, &[0x01, 0x40]);
        // 0x41: greedy would take 0x40. Its beacon 0x99 is routed via 0x01.
        t.add_routes([(id(0x99), id(0x01))]);
        let via = Some(id(0x99));
        assert_eq!(
            route_via(&t, &id(0x41), via.as_ref()),
            Route::Next {
                next_hop: &id(0x01),
                hop: &0x01
            }
        );
        // Its own route wins over the via.
        t.add_routes([(id(0x41), id(0x40))]);
        assert!(matches!(
            route_via(&t, &id(0x41), via.as_ref()),
            Route::Next { next_hop, .. } if *next_hop == id(0x40)
        ));
        // Compact: no route and no via is a miss, not greedy.
        let mut c = table(0x80, &[0x01, 0x40]);
        c.add_routes([(id(0x99), id(0x01))]);
        assert!(matches!(route(&c, &id(0x41)), Route::Next { .. }));
        c.set_compact(true);
        assert_eq!(route(&c, &id(0x41)), Route::Miss);
        // The local application's packet gets the cached via written in.
        c.add_vias([(id(0x41), id(0x99))]);
        let mut forwarder = Forwarder::new(0);
        let h = header(PacketType::Data, 0x41, 64);
        assert_eq!(
            forwarder.handle(Instant::now(), &h, Origin::LocalApp, &c),
            Action::Forward {
                next_hop: &id(0x01),
                hop: &0x01,
                hop_limit: 63,
                install: Install::Skip,
                add_via: Some(id(0x99)),
            }
        );
        // A neighbor's packet without a via is not given one.
        assert!(matches!(
            forwarder.handle(Instant::now(), &h, Origin::Neighbor, &c),
            Action::Miss { .. }
        ));
        // A neighbor's packet with a via goes on the via's route as is.
        let with_via = Header { via, ..h };
        assert!(matches!(
            forwarder.handle(Instant::now(), &with_via, Origin::Neighbor, &c),
            Action::Forward { next_hop, add_via: None, .. } if *next_hop == id(0x01)
        ));
    }

    /// A beacon that lost the route to a packet's destination (whose
    /// beacon changed) puts its own newer answer into the packet, and asks
    /// for no XDP entry (XDP cannot rewrite a via).
    #[test]
    fn a_beacon_without_the_route_rewrites_the_via_from_its_own_answer() {
        let mut t = table(0x99, &[0x01, 0x40]);
        t.set_compact(true);
        t.add_routes([(id(0x77), id(0x40))]);
        let stale = Header {
            via: Some(id(0x99)),
            ..header(PacketType::Data, 0x41, 64)
        };
        let mut forwarder = Forwarder::new(1000);
        // Not known here yet: a miss (the worker asks for a lookup).
        assert!(matches!(
            forwarder.handle(Instant::now(), &stale, Origin::Neighbor, &t),
            Action::Miss { .. }
        ));
        // The answer names this node again: still a miss.
        t.add_vias([(id(0x41), id(0x99))]);
        assert!(matches!(
            forwarder.handle(Instant::now(), &stale, Origin::Neighbor, &t),
            Action::Miss { .. }
        ));
        // A newer beacon: rewritten, forwarded toward it, not cached.
        t.add_vias([(id(0x41), id(0x77))]);
        assert_eq!(
            forwarder.handle(Instant::now(), &stale, Origin::Neighbor, &t),
            Action::Forward {
                next_hop: &id(0x40),
                hop: &0x40,
                hop_limit: 63,
                install: Install::Skip,
                add_via: Some(id(0x77)),
            }
        );
        // Another node's via is never touched.
        let other = Header {
            via: Some(id(0x77)),
            ..stale
        };
        assert!(matches!(
            forwarder.handle(Instant::now(), &other, Origin::Neighbor, &t),
            Action::Forward { add_via: None, .. }
        ));
    }

    /// Every action and drop reason the step returns, from each origin.
    #[test]
    fn every_action_and_drop_reason() {
        use Origin::{LocalApp, Neighbor, Unknown};
        use PacketType::{Control, Data};
        let t = table(0x80, &[0x01, 0x40, 0x70]);
        let n40 = id(0x40);
        let forward = |hop_limit| Action::Forward {
            next_hop: &n40,
            hop: &0x40u8,
            hop_limit,
            install: Install::Skip,
            add_via: None,
        };
        let cases: Vec<(Header, Origin, Action<'_, u8>)> = vec![
            // Control packets go up from anyone, even at hop limit 1.
            (header(Control, 0x41, 64), Unknown, Action::ToControl),
            (header(Control, 0x80, 1), Neighbor, Action::ToControl),
            (header(Control, 0x41, 64), LocalApp, Action::ToControl),
            // Data from strangers is dropped before any route is looked up.
            (
                header(Data, 0x80, 64),
                Unknown,
                Action::Drop(DropReason::NotNeighbor),
            ),
            (
                header(Data, 0x41, 1),
                Unknown,
                Action::Drop(DropReason::NotNeighbor),
            ),
            // For this node, whatever the hop limit.
            (header(Data, 0x80, 1), Neighbor, Action::Deliver),
            (header(Data, 0x80, 255), LocalApp, Action::Deliver),
            // Forwarded with the hop limit decremented.
            (header(Data, 0x41, 64), Neighbor, forward(63)),
            (header(Data, 0x41, 2), LocalApp, forward(1)),
            (header(Data, 0x41, 255), Neighbor, forward(254)),
            // The hop limit is checked before the route.
            (
                header(Data, 0x41, 1),
                Neighbor,
                Action::Drop(DropReason::HopLimitExceeded),
            ),
            (
                header(Data, 0x81, 1),
                LocalApp,
                Action::Drop(DropReason::HopLimitExceeded),
            ),
            (
                header(Data, 0x81, 0),
                Neighbor,
                Action::Drop(DropReason::HopLimitExceeded),
            ),
            // Nobody closer than this node.
            (
                header(Data, 0x81, 64),
                Neighbor,
                Action::Miss {
                    dst: id(0x81),
                    install: Install::Skip,
                },
            ),
            (
                header(Data, 0x81, 2),
                LocalApp,
                Action::Miss {
                    dst: id(0x81),
                    install: Install::Skip,
                },
            ),
        ];
        let mut forwarder = Forwarder::new(0);
        let now = Instant::now();
        for (h, origin, expected) in cases {
            assert_eq!(
                forwarder.handle(now, &h, origin, &t),
                expected,
                "{h:?} from {origin:?}"
            );
        }
    }

    #[test]
    fn installs_are_requested_once_and_rate_limited() {
        let t = table(0x80, &[0x40]);
        let now = Instant::now();
        let install = |action: Action<'_, u8>| match action {
            Action::Forward { install, .. } | Action::Miss { install, .. } => install,
            other => panic!("expected a forward or a miss, got {other:?}"),
        };
        let mut forwarder = Forwarder::new(10); // bursts of 1
        let to_41 = header(PacketType::Data, 0x41, 64);
        let nowhere = header(PacketType::Data, 0x81, 64);
        assert_eq!(
            install(forwarder.handle(now, &to_41, Origin::Neighbor, &t)),
            Install::Request
        );
        // Asked already.
        assert_eq!(
            install(forwarder.handle(now, &to_41, Origin::LocalApp, &t)),
            Install::Skip
        );
        // News, but the bucket is empty.
        assert_eq!(
            install(forwarder.handle(now, &nowhere, Origin::Neighbor, &t)),
            Install::Limited
        );
        // 100 ms later, one token more.
        let later = now + std::time::Duration::from_millis(100);
        assert_eq!(
            install(forwarder.handle(later, &nowhere, Origin::Neighbor, &t)),
            Install::Request
        );
        // Deliveries and drops ask for nothing (and take no token).
        let mut forwarder = Forwarder::new(10);
        for h in [
            header(PacketType::Data, 0x80, 64),
            header(PacketType::Data, 0x41, 1),
            header(PacketType::Control, 0x41, 64),
        ] {
            assert!(matches!(
                forwarder.handle(now, &h, Origin::Neighbor, &t),
                Action::Deliver | Action::Drop(_) | Action::ToControl
            ));
        }
        assert_eq!(
            install(forwarder.handle(now, &to_41, Origin::Neighbor, &t)),
            Install::Request
        );
    }

    proptest! {
        /// Every forward of the per-packet step makes strict progress and
        /// lowers the hop limit by one, never to zero; every other outcome
        /// is the one its inputs call for.
        #[test]
        fn step_forwards_closer_with_a_lower_hop_limit(
            local: [u8; 32],
            neighbors in proptest::collection::hash_set(any::<[u8; 32]>(), 0..32),
            dst: [u8; 32],
            hop_limit: u8,
            control: bool,
            origin in prop_oneof![
                Just(Origin::LocalApp),
                Just(Origin::Neighbor),
                Just(Origin::Unknown)
            ],
            install_rate in 0u32..100,
        ) {
            let local = NodeId::from_bytes(local);
            let dst = NodeId::from_bytes(dst);
            let t = NextHopTable::new(
                local,
                neighbors.into_iter().map(NodeId::from_bytes).filter(|n| *n != local).map(|n| (n, ())),
            ).expect("unique");
            let h = Header {
                packet_type: if control { PacketType::Control } else { PacketType::Data },
                dst,
                hop_limit,
                via: None,
            };
            let mut forwarder = Forwarder::new(install_rate);
            match forwarder.handle(Instant::now(), &h, origin, &t) {
                Action::ToControl => prop_assert!(control),
                Action::Drop(DropReason::NotNeighbor) => {
                    prop_assert!(!control && origin == Origin::Unknown);
                }
                Action::Deliver => prop_assert_eq!(dst, local),
                Action::Forward { next_hop, hop_limit: out, install, .. } => {
                    prop_assert!(next_hop.distance(&dst) < local.distance(&dst));
                    prop_assert_eq!(out, hop_limit - 1);
                    prop_assert!(out >= 1);
                    prop_assert_eq!(install == Install::Request, install_rate > 0);
                }
                Action::Drop(DropReason::HopLimitExceeded) => {
                    prop_assert!(hop_limit <= 1 && dst != local);
                }
                Action::Miss { dst: missed, .. } => {
                    prop_assert_eq!(missed, dst);
                    prop_assert!(hop_limit > 1);
                    for (n, _) in t.iter() {
                        prop_assert!(n.distance(&dst) >= local.distance(&dst));
                    }
                }
                Action::Drop(other) => prop_assert!(false, "unexpected drop {:?}", other),
            }
        }

        /// Every forward makes strict progress, so greedy routing cannot loop.
        #[test]
        fn forward_is_strictly_closer(
            local: [u8; 32],
            neighbors in proptest::collection::hash_set(any::<[u8; 32]>(), 0..32),
            dst: [u8; 32],
        ) {
            let local = NodeId::from_bytes(local);
            let dst = NodeId::from_bytes(dst);
            let t = NextHopTable::new(
                local,
                neighbors.into_iter().map(NodeId::from_bytes).filter(|n| *n != local).map(|n| (n, ())),
            ).expect("unique");
            match decide(&t, &dst, 64) {
                Verdict::Forward { next_hop, .. } => {
                    prop_assert!(next_hop.distance(&dst) < local.distance(&dst));
                    for (n, _) in t.iter() {
                        prop_assert!(next_hop.distance(&dst) <= n.distance(&dst));
                    }
                }
                Verdict::Deliver => prop_assert_eq!(dst, local),
                Verdict::Drop(reason) => {
                    prop_assert_eq!(reason, DropReason::NoRoute);
                    for (n, _) in t.iter() {
                        prop_assert!(n.distance(&dst) >= local.distance(&dst));
                    }
                }
            }
        }
    }
}
