//! Unit and property tests of the Kademlia state machine, driven by hand in
//! virtual time.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use proptest::prelude::*;

use super::*;

fn t0() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn at(ms: u64) -> Instant {
    t0() + Duration::from_millis(ms)
}

/// The local ID: all zeros.
fn local() -> NodeId {
    NodeId::from_bytes([0; 32])
}

/// An ID whose first byte is `first` (so its bucket is `first`'s leading
/// zeros) and last byte `n`.
fn id(first: u8, n: u8) -> NodeId {
    let mut b = [0u8; 32];
    b[0] = first;
    b[31] = n;
    NodeId::from_bytes(b)
}

/// A distinct /24 per `i`.
fn addr(i: u16) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, (i >> 8) as u8, i as u8, 1)),
        4789,
    )
}

fn config(k: usize) -> KadConfig {
    KadConfig {
        k,
        replacements_max: k,
        ..KadConfig::default()
    }
}

fn node(k: usize) -> Kademlia {
    Kademlia::new(local(), config(k), 7)
}

fn drain(kad: &mut Kademlia) -> Vec<KadAction> {
    std::iter::from_fn(|| kad.poll_action()).collect()
}

fn events(kad: &mut Kademlia) -> Vec<KadEvent> {
    std::iter::from_fn(|| kad.poll_event()).collect()
}

/// The messages among `actions`, parsed.
fn sent(actions: &[KadAction]) -> Vec<(NodeId, Repr)> {
    actions
        .iter()
        .filter_map(|a| match a {
            KadAction::Send { peer, bytes, .. } => Some((
                *peer,
                Repr::parse_bytes(bytes).expect("we emit valid messages"),
            )),
            _ => None,
        })
        .collect()
}

fn contact_set(kad: &Kademlia) -> BTreeSet<NodeId> {
    kad.contacts().map(|(id, _)| id).collect()
}

/// Connects `peers` (in bucket order of appearance) at `now`.
fn connect_all(kad: &mut Kademlia, now: Instant, peers: &[(NodeId, SocketAddr)]) {
    for (peer, a) in peers {
        kad.handle_connected(now, *peer, *a);
    }
}

fn nodes_bytes(request_id: u64, contacts: &[(NodeId, SocketAddr)]) -> Vec<u8> {
    Repr::Nodes {
        request_id,
        contacts: contacts
            .iter()
            .map(|(id, addr)| kad::Contact {
                id: *id,
                addr: *addr,
            })
            .collect(),
    }
    .to_bytes()
}

/// Drains the actions, answering every FIND_NODE with an empty NODES from
/// the peer asked, until nothing more is asked; returns the other actions.
fn answer_lookups(kad: &mut Kademlia, now: Instant) -> Vec<KadAction> {
    let mut rest = Vec::new();
    for _ in 0..100 {
        let actions = drain(kad);
        if actions.is_empty() {
            break;
        }
        for action in actions {
            if let KadAction::Send { peer, addr, bytes } = &action
                && let Ok(Repr::FindNode { request_id, .. }) = Repr::parse_bytes(bytes)
            {
                kad.handle_message(now, *peer, *addr, &nodes_bytes(request_id, &[]));
            } else {
                rest.push(action);
            }
        }
    }
    rest
}

#[test]
fn connected_peer_enters_table_and_bumps_generation() {
    let mut kad = node(16);
    assert_eq!(kad.generation(), 0);
    kad.handle_connected(at(0), id(0x80, 1), addr(1));
    assert_eq!(
        kad.contacts().collect::<Vec<_>>(),
        vec![(id(0x80, 1), addr(1))]
    );
    assert_eq!(kad.generation(), 1);
    assert_eq!(events(&mut kad), vec![KadEvent::TableChanged]);
    // Seen again: no change.
    kad.handle_connected(at(5), id(0x80, 1), addr(1));
    assert_eq!(kad.generation(), 1);
    // The first contact starts the join self-lookup through it.
    let first = sent(&drain(&mut kad));
    assert_eq!(
        first,
        vec![(
            id(0x80, 1),
            Repr::FindNode {
                request_id: match first[0].1 {
                    Repr::FindNode { request_id, .. } => request_id,
                    _ => 0,
                },
                target: local()
            }
        )]
    );
    kad.check_invariants().expect("invariants");
}

#[test]
fn nodes_reply_holds_only_table_contacts() {
    let mut kad = node(2);
    // Bucket 0 (first bit set) holds two; the third waits as a replacement.
    connect_all(
        &mut kad,
        at(0),
        &[
            (id(0x80, 1), addr(1)),
            (id(0x81, 2), addr(2)),
            (id(0x82, 3), addr(3)),
            (id(0x40, 4), addr(4)),
        ],
    );
    drain(&mut kad);
    let find = Repr::FindNode {
        request_id: 99,
        target: id(0x82, 3),
    }
    .to_bytes();
    kad.handle_message(at(1), id(0x80, 1), addr(1), &find);
    let replies = sent(&drain(&mut kad));
    let Some((
        to,
        Repr::Nodes {
            request_id,
            contacts,
        },
    )) = replies.last().cloned()
    else {
        panic!("expected a NODES reply, got {replies:?}");
    };
    assert_eq!(to, id(0x80, 1));
    assert_eq!(request_id, 99);
    let ids: Vec<NodeId> = contacts.iter().map(|c| c.id).collect();
    // Not the requester, not the replacement (unverified for handing out).
    assert_eq!(ids, vec![id(0x81, 2), id(0x40, 4)]);
}

#[test]
fn full_bucket_pings_lrs_and_evicts_only_after_failed_ping() {
    let mut kad = Kademlia::new(
        local(),
        KadConfig {
            request_attempts: 2,
            ..config(2)
        },
        7,
    );
    // 0x80 first (it answers the join lookup at once), then 0x81: 0x80 is
    // the least recently seen.
    kad.handle_connected(at(0), id(0x80, 1), addr(1));
    answer_lookups(&mut kad, at(0));
    kad.handle_connected(at(1), id(0x81, 2), addr(2));
    answer_lookups(&mut kad, at(1));
    let t = 10_000;
    kad.handle_connected(at(t), id(0x82, 3), addr(3));
    let pings = sent(&drain(&mut kad));
    assert!(
        matches!(pings[..], [(peer, Repr::Ping { .. })] if peer == id(0x80, 1)),
        "{pings:?}"
    );
    // No eviction before the ping failed, however often the timer runs.
    for ms in [t + 1, t + 500, t + 999] {
        kad.handle_timeout(at(ms));
        assert_eq!(
            contact_set(&kad),
            BTreeSet::from([id(0x80, 1), id(0x81, 2)])
        );
    }
    // First attempt lost: one retry.
    kad.handle_timeout(at(t + 1000));
    let retry = sent(&drain(&mut kad));
    assert!(matches!(retry[..], [(_, Repr::Ping { .. })]), "{retry:?}");
    assert_eq!(kad.counters().evictions, 0);
    // Second attempt lost: evicted, the replacement promoted.
    kad.handle_timeout(at(t + 2000));
    assert_eq!(
        contact_set(&kad),
        BTreeSet::from([id(0x81, 2), id(0x82, 3)])
    );
    assert!(drain(&mut kad).contains(&KadAction::Disconnect { peer: id(0x80, 1) }));
    assert_eq!(kad.counters().evictions, 1);
    kad.check_invariants().expect("invariants");
}

#[test]
fn long_lived_contact_kept_when_it_answers() {
    let mut kad = node(2);
    // 0x80 first (it answers the join lookup at once), then 0x81: 0x80 is
    // the least recently seen.
    kad.handle_connected(at(0), id(0x80, 1), addr(1));
    answer_lookups(&mut kad, at(0));
    kad.handle_connected(at(1), id(0x81, 2), addr(2));
    answer_lookups(&mut kad, at(1));
    kad.handle_connected(at(10_000), id(0x82, 3), addr(3));
    let Some((_, Repr::Ping { request_id })) = sent(&drain(&mut kad)).pop() else {
        panic!("expected a ping");
    };
    kad.handle_message(
        at(10_050),
        id(0x80, 1),
        addr(1),
        &Repr::Pong { request_id }.to_bytes(),
    );
    kad.handle_timeout(at(20_000));
    assert_eq!(
        contact_set(&kad),
        BTreeSet::from([id(0x80, 1), id(0x81, 2)])
    );
    assert_eq!(kad.counters().evictions, 0);
    assert_eq!(kad.counters().responses_unsolicited, 0);
    // Its session dies: the waiting replacement takes the slot.
    let generation = kad.generation();
    kad.handle_disconnected(at(20_001), id(0x80, 1));
    assert_eq!(
        contact_set(&kad),
        BTreeSet::from([id(0x81, 2), id(0x82, 3)])
    );
    assert!(kad.generation() > generation);
    assert_eq!(kad.counters().contacts_lost, 1);
    kad.check_invariants().expect("invariants");
}

#[test]
fn recently_seen_lrs_is_not_pinged() {
    let mut kad = node(1);
    kad.handle_connected(at(0), id(0x80, 1), addr(1));
    drain(&mut kad);
    // One second later the contact is fresh: no ping, no eviction.
    kad.handle_connected(at(1000), id(0x81, 2), addr(2));
    assert!(sent(&drain(&mut kad)).is_empty());
    assert_eq!(contact_set(&kad), BTreeSet::from([id(0x80, 1)]));
}

#[test]
fn subnet_limit_rejects_and_disconnects() {
    let mut kad = node(16);
    let same_net = |host: u8| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 9, host)), 4789);
    kad.handle_connected(at(0), id(0x80, 1), same_net(1));
    kad.handle_connected(at(0), id(0x81, 2), same_net(2));
    drain(&mut kad);
    kad.handle_connected(at(0), id(0x82, 3), same_net(3));
    assert!(!contact_set(&kad).contains(&id(0x82, 3)));
    assert_eq!(kad.counters().subnet_rejected, 1);
    assert_eq!(
        drain(&mut kad),
        vec![KadAction::Disconnect { peer: id(0x82, 3) }]
    );
    // Another bucket takes the same subnet.
    kad.handle_connected(at(0), id(0x40, 4), same_net(4));
    assert!(contact_set(&kad).contains(&id(0x40, 4)));
}

#[test]
fn lookup_finds_target_through_replies() {
    let mut kad = node(16);
    let peers = [
        (id(0x80, 1), addr(1)),
        (id(0x40, 2), addr(2)),
        (id(0x20, 3), addr(3)),
    ];
    connect_all(&mut kad, at(0), &peers);
    drain(&mut kad);
    events(&mut kad);
    let target = (id(0x21, 9), addr(9));
    let lookup = kad.start_lookup(at(100), target.0).expect("room");
    let queries = sent(&drain(&mut kad));
    // alpha = 3 requests, closest first.
    let asked: Vec<NodeId> = queries.iter().map(|(p, _)| *p).collect();
    assert_eq!(asked, vec![id(0x20, 3), id(0x40, 2), id(0x80, 1)]);
    for (peer, repr) in &queries {
        let contacts: &[(NodeId, SocketAddr)] = if *peer == id(0x20, 3) {
            std::slice::from_ref(&target)
        } else {
            &[]
        };
        let bytes = nodes_bytes(repr.request_id(), contacts);
        let from = peers
            .iter()
            .find(|(p, _)| p == peer)
            .expect("asked a peer")
            .1;
        kad.handle_message(at(150), *peer, from, &bytes);
    }
    let actions = drain(&mut kad);
    assert!(actions.contains(&KadAction::Connect {
        addr: target.1,
        expect: Some(target.0)
    }));
    let next = sent(&actions);
    let [(to, Repr::FindNode { request_id, .. })] = next[..] else {
        panic!("expected one FIND_NODE to the target, got {next:?}");
    };
    assert_eq!(to, target.0);
    kad.handle_message(at(200), target.0, target.1, &nodes_bytes(request_id, &[]));
    let done = events(&mut kad)
        .into_iter()
        .find_map(|e| match e {
            KadEvent::LookupDone {
                id,
                target,
                closest,
                queried,
                rounds,
            } => Some((id, target, closest, queried, rounds)),
            KadEvent::TableChanged => None,
        })
        .expect("lookup done");
    assert_eq!(done.0, lookup);
    assert_eq!(done.1, target.0);
    assert_eq!(done.2.first(), Some(&target));
    assert_eq!(done.2.len(), 4);
    assert_eq!(done.3, 4);
    assert_eq!(done.4, 2);
    kad.check_invariants().expect("invariants");
}

#[test]
fn request_timeout_retries_then_fails_and_queries_next() {
    let mut kad = Kademlia::new(
        local(),
        KadConfig {
            alpha: 1,
            request_attempts: 2,
            ..config(16)
        },
        1,
    );
    let near = (id(0x01, 1), addr(1));
    let far = (id(0x80, 2), addr(2));
    connect_all(&mut kad, at(0), &[near, far]);
    answer_lookups(&mut kad, at(0));
    kad.start_lookup(at(0), id(0x01, 5)).expect("room");
    let first = sent(&drain(&mut kad));
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0, near.0);
    kad.handle_timeout(at(999));
    assert!(drain(&mut kad).is_empty());
    // Timed out once: asked again.
    kad.handle_timeout(at(1000));
    let second = sent(&drain(&mut kad));
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].0, near.0);
    assert_ne!(second[0].1.request_id(), first[0].1.request_id());
    // Timed out twice: failed; the next candidate is asked, and the silent
    // contact gets a liveness ping.
    kad.handle_timeout(at(2000));
    let third = sent(&drain(&mut kad));
    assert!(
        third
            .iter()
            .any(|(p, r)| *p == near.0 && matches!(r, Repr::Ping { .. }))
    );
    assert!(
        third
            .iter()
            .any(|(p, r)| *p == far.0 && matches!(r, Repr::FindNode { .. }))
    );
    assert_eq!(kad.counters().requests_timed_out, 2);
    // The far node answers: done, without the failed one.
    let request_id = third
        .iter()
        .find(|(p, _)| *p == far.0)
        .map(|(_, r)| r.request_id())
        .expect("asked");
    kad.handle_message(at(2100), far.0, far.1, &nodes_bytes(request_id, &[]));
    let done = events(&mut kad).into_iter().find_map(|e| match e {
        KadEvent::LookupDone { closest, .. } => Some(closest),
        KadEvent::TableChanged => None,
    });
    assert_eq!(done, Some(vec![far]));
}

#[test]
fn late_reply_to_a_failed_request_is_unsolicited() {
    let mut kad = node(16);
    let peer = (id(0x80, 1), addr(1));
    kad.handle_connected(at(0), peer.0, peer.1);
    let join = sent(&drain(&mut kad));
    let request_id = join[0].1.request_id();
    kad.handle_timeout(at(5000));
    drain(&mut kad);
    kad.handle_message(at(5001), peer.0, peer.1, &nodes_bytes(request_id, &[]));
    assert_eq!(kad.counters().responses_unsolicited, 1);
}

#[test]
fn bootstrap_connects_seed_then_self_lookup_and_learned_contacts() {
    let mut kad = node(16);
    let seed = addr(100);
    kad.add_seed(at(0), seed);
    assert_eq!(
        drain(&mut kad),
        vec![KadAction::Connect {
            addr: seed,
            expect: None
        }]
    );
    let seed_id = id(0x80, 100);
    kad.handle_connected(at(20), seed_id, seed);
    let join = sent(&drain(&mut kad));
    let [(to, Repr::FindNode { request_id, target })] = join[..] else {
        panic!("expected the join self-lookup, got {join:?}");
    };
    assert_eq!((to, target), (seed_id, local()));
    let learned = [(id(0x01, 1), addr(1)), (id(0x02, 2), addr(2))];
    kad.handle_message(at(40), seed_id, seed, &nodes_bytes(request_id, &learned));
    let actions = drain(&mut kad);
    for (peer, a) in learned {
        assert!(actions.contains(&KadAction::Connect {
            addr: a,
            expect: Some(peer)
        }));
        assert!(
            sent(&actions)
                .iter()
                .any(|(p, r)| *p == peer && matches!(r, Repr::FindNode { .. }))
        );
    }
    // Learned contacts are not in the table until their session is up.
    assert_eq!(contact_set(&kad), BTreeSet::from([seed_id]));
}

#[test]
fn empty_table_rebootstraps_at_once_and_periodically() {
    let mut kad = node(16);
    let seed = addr(100);
    kad.add_seed(at(0), seed);
    kad.handle_connected(at(20), id(0x80, 100), seed);
    drain(&mut kad);
    kad.handle_disconnected(at(1000), id(0x80, 100));
    assert!(kad.is_empty());
    assert!(drain(&mut kad).contains(&KadAction::Connect {
        addr: seed,
        expect: None
    }));
    kad.handle_unreachable(at(2000), seed, None);
    assert_eq!(kad.counters().connects_failed, 1);
    // Next round: 30 s after the last (the lost contact itself is redialed
    // meanwhile, by ID: see a_lost_contact_is_redialed_...).
    kad.handle_timeout(at(30_999));
    assert!(
        !drain(&mut kad)
            .iter()
            .any(|a| matches!(a, KadAction::Connect { expect: None, .. }))
    );
    // That redial fails (a connect to the address in flight would stand for
    // the re-bootstrap's).
    kad.handle_unreachable(at(30_999), seed, Some(id(0x80, 100)));
    kad.handle_timeout(at(31_000));
    assert!(drain(&mut kad).contains(&KadAction::Connect {
        addr: seed,
        expect: None
    }));
}

#[test]
fn known_peers_are_reconnected_on_rebootstrap() {
    let mut kad = node(16);
    let known = (id(0x40, 7), addr(7));
    kad.add_known(at(0), known.0, known.1);
    let connect = KadAction::Connect {
        addr: known.1,
        expect: Some(known.0),
    };
    assert_eq!(drain(&mut kad), vec![connect.clone()]);
    kad.handle_unreachable(at(500), known.1, Some(known.0));
    kad.handle_timeout(at(30_000));
    assert!(drain(&mut kad).contains(&connect));
    // In the table: not reconnected.
    kad.handle_connected(at(30_100), known.0, known.1);
    drain(&mut kad);
    kad.handle_timeout(at(60_000));
    assert!(!drain(&mut kad).contains(&connect));
}

#[test]
fn a_lost_configured_neighbor_is_redialed_until_it_is_back() {
    let mut kad = node(16);
    let n = (id(0x40, 3), addr(3));
    kad.add_known(at(0), n.0, n.1);
    drain(&mut kad);
    kad.handle_connected(at(100), n.0, n.1);
    drain(&mut kad);
    assert!(contact_set(&kad).contains(&n.0));
    // A partition: the session dies and every redial fails, for 60 s.
    kad.handle_disconnected(at(1_000), n.0);
    let connect = KadAction::Connect {
        addr: n.1,
        expect: Some(n.0),
    };
    let mut dials = Vec::new();
    for step in 0..120u64 {
        let now = at(1_000 + step * 500);
        kad.handle_timeout(now);
        for action in drain(&mut kad) {
            if action == connect {
                dials.push(now);
                kad.handle_unreachable(now, n.1, Some(n.0));
            }
        }
    }
    assert!(
        dials.len() > REDIAL_ATTEMPTS as usize + 5,
        "{} dials",
        dials.len()
    );
    // Never more than KNOWN_REDIAL_MAX apart (the re-bootstrap may add some).
    for pair in dials.windows(2) {
        assert!(
            pair[1] - pair[0] <= KNOWN_REDIAL_MAX,
            "{:?}",
            pair[1] - pair[0]
        );
    }
    assert!(at(61_000) - *dials.last().expect("dials") <= KNOWN_REDIAL_MAX);
}

#[test]
fn an_unreachable_configured_neighbor_is_redialed_before_the_rebootstrap() {
    let mut kad = node(16);
    let n = (id(0x40, 4), addr(4));
    kad.add_known(at(0), n.0, n.1);
    let connect = KadAction::Connect {
        addr: n.1,
        expect: Some(n.0),
    };
    assert!(drain(&mut kad).contains(&connect));
    // Not up yet: the first dial fails.
    kad.handle_unreachable(at(1_750), n.1, Some(n.0));
    drain(&mut kad);
    let mut redialed = None;
    for step in 1..=20u64 {
        let now = at(1_750 + step * 250);
        kad.handle_timeout(now);
        if drain(&mut kad).contains(&connect) {
            redialed = Some(now);
            break;
        }
    }
    let redialed = redialed.expect("redialed within 5 s");
    assert!(
        redialed - at(1_750) <= KNOWN_REDIAL_MAX,
        "{:?}",
        redialed - at(1_750)
    );
}

#[test]
fn a_lost_contact_is_redialed_with_backoff_until_it_is_back() {
    let mut kad = node(16);
    let a = (id(0x40, 1), addr(1));
    let b = (id(0x40, 2), addr(2));
    connect_all(&mut kad, at(0), &[a, b]);
    drain(&mut kad);
    let connect_a = KadAction::Connect {
        addr: a.1,
        expect: Some(a.0),
    };
    // A session that dies (keepalives lost to a burst of loss) ...
    kad.handle_disconnected(at(1_000), a.0);
    assert!(!contact_set(&kad).contains(&a.0));
    drain(&mut kad);
    // ... is dialed again after REDIAL_FIRST, not before.
    assert_eq!(kad.poll_timeout().map(|t| t <= at(2_000)), Some(true));
    kad.handle_timeout(at(1_900));
    assert!(!drain(&mut kad).contains(&connect_a));
    kad.handle_timeout(at(2_000));
    assert!(drain(&mut kad).contains(&connect_a));
    assert_eq!(kad.counters().redials, 1);
    // The handshake fails; the next attempt waits twice as long.
    kad.handle_unreachable(at(2_500), a.1, Some(a.0));
    drain(&mut kad);
    kad.handle_timeout(at(3_900));
    assert!(!drain(&mut kad).contains(&connect_a));
    kad.handle_timeout(at(4_000));
    assert!(drain(&mut kad).contains(&connect_a));
    // Back: in the table, counted, not dialed again.
    kad.handle_connected(at(4_100), a.0, a.1);
    drain(&mut kad);
    assert!(contact_set(&kad).contains(&a.0));
    assert_eq!(kad.counters().redials_recovered, 1);
    kad.handle_timeout(at(60_000));
    assert!(!drain(&mut kad).contains(&connect_a));

    // A node that stays gone costs REDIAL_ATTEMPTS connects, then none.
    kad.handle_disconnected(at(100_000), b.0);
    let connect_b = KadAction::Connect {
        addr: b.1,
        expect: Some(b.0),
    };
    let mut dials = 0;
    for step in 0..200u64 {
        let now = at(100_000 + step * 500);
        kad.handle_timeout(now);
        for action in drain(&mut kad) {
            if action == connect_b {
                dials += 1;
                kad.handle_unreachable(now, b.1, Some(b.0));
            }
        }
    }
    assert_eq!(dials, REDIAL_ATTEMPTS);

    // A session with a node that was no contact is not redialed.
    let stranger = (id(0x40, 9), addr(9));
    kad.handle_disconnected(at(300_000), stranger.0);
    kad.handle_timeout(at(302_000));
    assert!(
        !drain(&mut kad)
            .iter()
            .any(|a| matches!(a, KadAction::Connect { expect: Some(p), .. } if *p == stranger.0))
    );
}

#[test]
fn refresh_looks_up_stale_buckets() {
    let mut kad = node(16);
    kad.handle_connected(at(0), id(0x80, 1), addr(1));
    // The join self-lookup, answered at 10 ms, explored every bucket: the
    // first refresh is due 60 s later.
    answer_lookups(&mut kad, at(10));
    kad.handle_timeout(at(30_000));
    drain(&mut kad);
    assert!(kad.poll_timeout().is_some_and(|t| t <= at(60_010)));
    kad.handle_timeout(at(60_009));
    assert!(drain(&mut kad).is_empty());
    kad.handle_timeout(at(60_010));
    let targets: Vec<Option<usize>> = sent(&drain(&mut kad))
        .into_iter()
        .filter_map(|(_, r)| match r {
            Repr::FindNode { target, .. } => Some(local().first_differing_bit(&target)),
            _ => None,
        })
        .collect();
    // Deepest non-empty bucket is 0: buckets 0 and 1 are refreshed (the
    // only contact is asked once per lookup).
    assert_eq!(targets, vec![Some(0), Some(1)]);
    assert_eq!(kad.counters().refreshes, 2);
}

#[test]
fn connects_in_flight_are_bounded() {
    let mut kad = Kademlia::new(
        local(),
        KadConfig {
            connects_in_flight_max: 2,
            ..config(16)
        },
        3,
    );
    kad.handle_connected(at(0), id(0x80, 1), addr(1));
    let join = sent(&drain(&mut kad));
    let learned: Vec<(NodeId, SocketAddr)> =
        (2..8).map(|i| (id(i, i), addr(u16::from(i)))).collect();
    kad.handle_message(
        at(10),
        id(0x80, 1),
        addr(1),
        &nodes_bytes(join[0].1.request_id(), &learned),
    );
    let connects = drain(&mut kad)
        .into_iter()
        .filter(|a| matches!(a, KadAction::Connect { .. }))
        .count();
    assert_eq!(connects, 2);
    assert!(kad.counters().connects_deferred >= 4);
    // The glue never answers: the slots free after connect_timeout.
    kad.handle_timeout(at(10 + 5000));
    kad.check_invariants().expect("invariants");
}

#[test]
fn user_lookups_are_bounded_and_empty_table_answers_at_once() {
    let mut kad = node(16);
    let first = kad.start_lookup(at(0), id(0x80, 1)).expect("room");
    assert!(matches!(
        events(&mut kad)[..],
        [KadEvent::LookupDone { id, ref closest, .. }] if id == first && closest.is_empty()
    ));
    kad.handle_connected(at(0), id(0x80, 1), addr(1));
    for _ in 0..USER_LOOKUPS_MAX {
        assert!(kad.start_lookup(at(1), id(0x40, 2)).is_some());
    }
    assert_eq!(kad.start_lookup(at(1), id(0x40, 2)), None);
    assert_eq!(kad.counters().lookups_rejected, 1);
    kad.check_invariants().expect("invariants");
}

#[test]
fn unreachable_fails_pending_ping_and_lookup_requests() {
    let mut kad = Kademlia::new(
        local(),
        KadConfig {
            request_attempts: 1,
            ..config(1)
        },
        5,
    );
    kad.handle_connected(at(0), id(0x80, 1), addr(1));
    drain(&mut kad);
    kad.handle_connected(at(10_000), id(0x81, 2), addr(2));
    assert!(matches!(
        sent(&drain(&mut kad))[..],
        [(_, Repr::Ping { .. })]
    ));
    kad.handle_unreachable(at(10_010), addr(1), Some(id(0x80, 1)));
    assert_eq!(contact_set(&kad), BTreeSet::from([id(0x81, 2)]));
    assert_eq!(kad.counters().evictions, 1);
}

#[test]
fn messages_from_self_and_garbage_are_counted() {
    let mut kad = node(16);
    kad.handle_message(
        at(0),
        local(),
        addr(1),
        &Repr::Ping { request_id: 1 }.to_bytes(),
    );
    kad.handle_message(at(0), id(0x80, 1), addr(1), &[0xff, 1, 2]);
    assert_eq!(kad.counters().messages_bad, 2);
    assert!(kad.is_empty());
    // An unsolicited PONG proves liveness but is counted.
    kad.handle_message(
        at(0),
        id(0x80, 1),
        addr(1),
        &Repr::Pong { request_id: 1 }.to_bytes(),
    );
    assert_eq!(kad.counters().responses_unsolicited, 1);
    assert_eq!(kad.len(), 1);
}

#[test]
fn counters_serialize() {
    let json = serde_json::to_string(&node(16).counters()).expect("serializes");
    assert!(json.contains("\"evictions\":0"));
}

/// One input of the random-operations property test.
#[derive(Debug, Clone)]
enum Op {
    Connected { peer: u8, net: u8 },
    Disconnected { peer: u8 },
    Unreachable { peer: u8 },
    FindNode { peer: u8, target: u8 },
    Ping { peer: u8 },
    Nodes { peer: u8, contacts: Vec<(u8, u8)> },
    Garbage { peer: u8, bytes: Vec<u8> },
    Advance { ms: u16 },
    Lookup { target: u8 },
}

/// Peer `p`: 64 IDs spread over buckets 0..8.
fn peer_id(p: u8) -> NodeId {
    let p = p % 64;
    id(0x80 >> (p % 8), p)
}

/// A small set of subnets, so that the limits bite.
fn peer_addr(p: u8, net: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, net % 6, p)), 4789)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (any::<u8>(), any::<u8>()).prop_map(|(peer, net)| Op::Connected { peer, net }),
        2 => any::<u8>().prop_map(|peer| Op::Disconnected { peer }),
        1 => any::<u8>().prop_map(|peer| Op::Unreachable { peer }),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(peer, target)| Op::FindNode { peer, target }),
        1 => any::<u8>().prop_map(|peer| Op::Ping { peer }),
        2 => (any::<u8>(), proptest::collection::vec((any::<u8>(), any::<u8>()), 0..6))
            .prop_map(|(peer, contacts)| Op::Nodes { peer, contacts }),
        1 => (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..60))
            .prop_map(|(peer, bytes)| Op::Garbage { peer, bytes }),
        3 => (0u16..3000).prop_map(|ms| Op::Advance { ms }),
        1 => any::<u8>().prop_map(|target| Op::Lookup { target }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Random inputs: the table's invariants and every bound hold, NODES
    /// replies hand out table contacts only, the generation tracks changes,
    /// and evictions only follow pings.
    #[test]
    fn random_operations_keep_invariants(
        ops in proptest::collection::vec(op(), 1..200),
        k in 1usize..5,
        seed: u64,
    ) {
        let mut kad = Kademlia::new(
            local(),
            KadConfig { subnet_table_max: 4, ..config(k) },
            seed,
        );
        let mut now_ms = 0u64;
        // The addresses peers connected from, so messages come from there.
        let mut nets = [0u8; 64];
        let mut last_request = 0u64;
        let mut pinged: BTreeSet<NodeId> = BTreeSet::new();
        for op in ops {
            let now = at(now_ms);
            let before = contact_set(&kad);
            let generation = kad.generation();
            let evictions = kad.counters().evictions;
            match op {
                Op::Connected { peer, net } => {
                    nets[usize::from(peer % 64)] = net;
                    kad.handle_connected(now, peer_id(peer), peer_addr(peer % 64, net));
                }
                Op::Disconnected { peer } => kad.handle_disconnected(now, peer_id(peer)),
                Op::Unreachable { peer } => kad.handle_unreachable(
                    now,
                    peer_addr(peer % 64, nets[usize::from(peer % 64)]),
                    Some(peer_id(peer)),
                ),
                Op::FindNode { peer, target } => {
                    let bytes = Repr::FindNode { request_id: 1, target: peer_id(target) }.to_bytes();
                    kad.handle_message(now, peer_id(peer), peer_addr(peer % 64, nets[usize::from(peer % 64)]), &bytes);
                }
                Op::Ping { peer } => {
                    let bytes = Repr::Ping { request_id: 2 }.to_bytes();
                    kad.handle_message(now, peer_id(peer), peer_addr(peer % 64, nets[usize::from(peer % 64)]), &bytes);
                }
                Op::Nodes { peer, contacts } => {
                    let contacts: Vec<(NodeId, SocketAddr)> = contacts
                        .into_iter()
                        .map(|(p, n)| (peer_id(p), peer_addr(p % 64, n)))
                        .collect();
                    // Sometimes an answer to our latest request, sometimes not.
                    let request_id = if peer % 2 == 0 { last_request } else { u64::from(peer) };
                    kad.handle_message(now, peer_id(peer), peer_addr(peer % 64, nets[usize::from(peer % 64)]), &nodes_bytes(request_id, &contacts));
                }
                Op::Garbage { peer, bytes } => {
                    kad.handle_message(now, peer_id(peer), peer_addr(peer % 64, 0), &bytes);
                }
                Op::Advance { ms } => {
                    now_ms += u64::from(ms);
                    kad.handle_timeout(at(now_ms));
                }
                Op::Lookup { target } => {
                    let _ = kad.start_lookup(now, peer_id(target));
                }
            }
            let contacts = contact_set(&kad);
            for (to, repr) in sent(&drain(&mut kad)) {
                match repr {
                    Repr::Nodes { contacts: handed, .. } => {
                        for c in handed {
                            prop_assert!(contacts.contains(&c.id), "handed out {:?}", c.id);
                            prop_assert!(c.id != to);
                        }
                    }
                    Repr::Ping { .. } => {
                        pinged.insert(to);
                    }
                    Repr::FindNode { request_id, .. } => last_request = request_id,
                    Repr::Pong { .. } => {}
                }
            }
            if kad.counters().evictions > evictions {
                // Only a contact we pinged can be evicted.
                for gone in before.difference(&contacts) {
                    prop_assert!(pinged.contains(gone) || !contacts.contains(gone));
                }
                prop_assert!(before.difference(&contacts).any(|g| pinged.contains(g)));
            }
            if before != contacts {
                prop_assert!(kad.generation() > generation);
            }
            if let Err(e) = kad.check_invariants() {
                prop_assert!(false, "{}", e);
            }
            let _ = events(&mut kad);
        }
    }

    /// Any bytes from any peer: no panic; unparseable ones are counted.
    #[test]
    fn handle_message_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1300), peer: [u8; 32]) {
        let mut kad = node(16);
        let peer = NodeId::from_bytes(peer);
        kad.handle_message(at(0), peer, addr(1), &bytes);
        let bad = Repr::parse_bytes(&bytes).is_err() || peer == local();
        prop_assert_eq!(kad.counters().messages_bad, u64::from(bad));
        drain(&mut kad);
    }

    /// `closest` is the brute-force sort of the contacts, truncated.
    #[test]
    fn closest_is_sorted_by_distance(
        peers in proptest::collection::vec(any::<[u8; 32]>(), 0..120),
        target: [u8; 32],
        count in 0usize..40,
    ) {
        let mut kad = Kademlia::new(
            local(),
            KadConfig { subnet_bucket_max: 100, subnet_table_max: 1000, ..config(8) },
            0,
        );
        for (i, p) in peers.iter().enumerate() {
            kad.handle_connected(at(0), NodeId::from_bytes(*p), addr(i as u16));
        }
        let target = NodeId::from_bytes(target);
        let mut all: Vec<(NodeId, SocketAddr)> = kad.contacts().collect();
        all.sort_by_key(|(id, _)| id.distance(&target));
        all.truncate(count);
        prop_assert_eq!(kad.closest(&target, count), all);
    }

    /// Per-subnet limits hold under random insertions from few subnets.
    #[test]
    fn subnet_limits_hold(peers in proptest::collection::vec((any::<[u8; 32]>(), 0u8..4, any::<u8>()), 0..200)) {
        let mut kad = node(16);
        for (p, net, host) in peers {
            let a = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, net, host)), 1);
            kad.handle_connected(at(0), NodeId::from_bytes(p), a);
        }
        let mut per_net = std::collections::BTreeMap::new();
        for (_, a) in kad.contacts() {
            *per_net.entry(a.ip().to_string().rsplit_once('.').map(|(n, _)| n.to_string())).or_insert(0) += 1;
        }
        prop_assert!(per_net.values().all(|n| *n <= 10), "{:?}", per_net);
        prop_assert!(kad.len() <= 40);
        if let Err(e) = kad.check_invariants() {
            prop_assert!(false, "{}", e);
        }
    }
}
