//! Endpoints driven through an in-memory relay in virtual time: the relay
//! delivers each payload to the endpoint of its destination ID, after a
//! latency, and lets a test drop, copy, tamper with or re-source packets.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::wire::e2e::{Kind, MAC_LEN, MAC1_OFFSET};

fn random_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).expect("OS randomness");
    seed
}

fn random_u64() -> u64 {
    u64::from_le_bytes(random_seed()[..8].try_into().expect("8 bytes"))
}

fn identity() -> Identity {
    Identity::from_seed(&random_seed())
}

/// A packet in flight.
#[derive(Debug, Clone)]
struct Flight {
    at: Instant,
    src: NodeId,
    dst: NodeId,
    payload: Vec<u8>,
}

/// What the relay's filter does with a packet.
enum Verdict {
    Deliver,
    Drop,
}

struct Net {
    now: Instant,
    nodes: Vec<Endpoints>,
    identities: Vec<Identity>,
    events: Vec<Vec<E2eEvent>>,
    flights: Vec<Flight>,
    /// Latency of each packet: `base + random() % jitter` (jitter 0: none).
    base: Duration,
    jitter_ms: u64,
    /// Every payload the relay saw, with its source and destination.
    log: Vec<Flight>,
    filter: Box<dyn FnMut(&mut Flight) -> Verdict>,
}

impl Net {
    fn new(configs: Vec<E2eConfig>) -> Net {
        let identities: Vec<Identity> = configs.iter().map(|_| identity()).collect();
        let nodes = identities
            .iter()
            .zip(configs)
            .map(|(id, config)| Endpoints::new(id, config, random_seed()))
            .collect();
        Net {
            now: Instant::now(),
            events: identities.iter().map(|_| Vec::new()).collect(),
            nodes,
            identities,
            flights: Vec::new(),
            base: Duration::ZERO,
            jitter_ms: 0,
            log: Vec::new(),
            filter: Box::new(|_| Verdict::Deliver),
        }
    }

    fn id(&self, i: usize) -> NodeId {
        self.nodes[i].local_id()
    }

    fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| n.local_id() == *id)
    }

    fn send(&mut self, from: usize, to: usize, bytes: &[u8]) {
        let dst = self.id(to);
        let now = self.now;
        self.nodes[from]
            .send(now, dst, bytes)
            .expect("a valid packet");
        self.collect();
    }

    /// Moves every node's transmits into flight and its events into
    /// `events`.
    fn collect(&mut self) {
        for i in 0..self.nodes.len() {
            let src = self.id(i);
            while let Some((dst, payload)) = self.nodes[i].poll_transmit() {
                let jitter = if self.jitter_ms == 0 {
                    0
                } else {
                    random_u64() % self.jitter_ms
                };
                let at = self.now + self.base + Duration::from_millis(jitter);
                let flight = Flight {
                    at,
                    src,
                    dst,
                    payload,
                };
                self.log.push(flight.clone());
                self.flights.push(flight);
            }
            while let Some(event) = self.nodes[i].poll_event() {
                self.events[i].push(event);
            }
        }
    }

    /// Delivers what is due at `now` (and what that causes, if due).
    fn deliver_due(&mut self) {
        loop {
            self.collect();
            let now = self.now;
            let (due, later): (Vec<Flight>, Vec<Flight>) =
                self.flights.drain(..).partition(|f| f.at <= now);
            self.flights = later;
            if due.is_empty() {
                return;
            }
            for mut flight in due {
                if let Verdict::Drop = (self.filter)(&mut flight) {
                    continue;
                }
                if let Some(j) = self.index_of(&flight.dst) {
                    self.nodes[j].handle_packet(now, flight.src, &flight.payload);
                }
            }
        }
    }

    /// Runs timers and deliveries up to `until`.
    fn run_until(&mut self, until: Instant) {
        loop {
            self.deliver_due();
            let timers = self.nodes.iter().filter_map(Endpoints::poll_timeout);
            let flights = self.flights.iter().map(|f| f.at);
            let Some(next) = timers.chain(flights).min() else {
                break;
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            let now = self.now;
            for node in &mut self.nodes {
                if node.poll_timeout().is_some_and(|t| t <= now) {
                    node.handle_timeout(now);
                }
            }
        }
        self.now = self.now.max(until);
        self.deliver_due();
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn take_events(&mut self, i: usize) -> Vec<E2eEvent> {
        self.collect();
        std::mem::take(&mut self.events[i])
    }

    fn received(&mut self, i: usize) -> Vec<(NodeId, Vec<u8>)> {
        self.take_events(i)
            .into_iter()
            .filter_map(|e| match e {
                E2eEvent::Received { src, plaintext } => Some((src, plaintext)),
                _ => None,
            })
            .collect()
    }

    fn kinds_from(&self, i: usize) -> Vec<Kind> {
        let src = self.id(i);
        self.log
            .iter()
            .filter(|f| f.src == src)
            .filter_map(|f| f.payload.first().and_then(|k| Kind::from_u8(*k)))
            .collect()
    }
}

fn two() -> Net {
    Net::new(vec![E2eConfig::default(), E2eConfig::default()])
}

fn established(events: &[E2eEvent], peer: NodeId) -> bool {
    events.contains(&E2eEvent::Established { peer })
}

#[test]
fn xx_handshake_then_ik_after_idle_expiry() {
    let mut net = two();
    let (a, b) = (net.id(0), net.id(1));
    assert!(!net.nodes[0].knows_peer_key(&b));
    net.send(0, 1, b"first");
    net.run_for(Duration::from_millis(10));
    let events_b = net.take_events(1);
    assert!(established(&events_b, a), "{events_b:?}");
    assert!(events_b.contains(&E2eEvent::Received {
        src: a,
        plaintext: b"first".to_vec()
    }));
    assert!(established(&net.take_events(0), b));
    assert_eq!(
        net.kinds_from(0)[..2],
        [Kind::XxInit, Kind::XxFinish],
        "XX when B's key is unknown"
    );
    assert!(net.nodes[0].knows_peer_key(&b) && net.nodes[1].knows_peer_key(&a));

    // Both idle for longer than idle_timeout: both sessions close.
    net.run_for(Duration::from_secs(181));
    for (i, peer) in [(0, b), (1, a)] {
        let events = net.take_events(i);
        assert!(
            events.contains(&E2eEvent::Closed {
                peer,
                reason: CloseReason::Idle
            }),
            "{events:?}"
        );
        assert_eq!(net.nodes[i].session_count(), 0);
        assert_eq!(net.nodes[i].keypair_count(), 0);
        assert_eq!(net.nodes[i].counters().sessions_expired, 1);
    }

    // The next session uses IK with the cached key; B answers the other
    // way on it.
    net.log.clear();
    net.send(0, 1, b"second");
    net.run_for(Duration::from_millis(10));
    assert_eq!(net.kinds_from(0)[0], Kind::IkInit);
    assert_eq!(net.kinds_from(1)[0], Kind::IkResponse);
    assert_eq!(net.received(1), vec![(a, b"second".to_vec())]);
    net.send(1, 0, b"back");
    net.run_for(Duration::from_millis(10));
    assert_eq!(net.received(0), vec![(b, b"back".to_vec())]);
}

#[test]
fn given_key_means_ik_at_once_and_data_flows_both_ways() {
    let mut net = Net::new(vec![E2eConfig::default(), E2eConfig::default()]);
    net.base = Duration::from_millis(5);
    let (a, b) = (net.id(0), net.id(1));
    let key_b = net.identities[1].public_key();
    net.nodes[0].add_peer_key(&key_b);
    let mut sent_ab = Vec::new();
    let mut sent_ba = Vec::new();
    for n in 0..200u32 {
        let len = 1 + (random_u64() % 1400) as usize;
        let mut packet = vec![0u8; len];
        getrandom::getrandom(&mut packet).expect("OS randomness");
        let (from, to, list) = if n % 2 == 0 {
            (0, 1, &mut sent_ab)
        } else {
            (1, 0, &mut sent_ba)
        };
        packet.extend_from_slice(&n.to_be_bytes());
        net.send(from, to, &packet);
        list.push(packet);
        net.run_for(Duration::from_millis(1));
    }
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.kinds_from(0)[0], Kind::IkInit);
    assert!(!net.kinds_from(0).contains(&Kind::XxInit));
    let got_b: Vec<Vec<u8>> = net
        .received(1)
        .into_iter()
        .map(|(s, p)| {
            assert_eq!(s, a);
            p
        })
        .collect();
    let got_a: Vec<Vec<u8>> = net
        .received(0)
        .into_iter()
        .map(|(s, p)| {
            assert_eq!(s, b);
            p
        })
        .collect();
    assert_eq!(got_b, sent_ab);
    assert_eq!(got_a, sent_ba);
}

/// An established pair; returns the net after one packet each way.
fn pair() -> Net {
    let mut net = two();
    net.send(0, 1, b"hello");
    net.run_for(Duration::from_millis(10));
    net.send(1, 0, b"hello back");
    net.run_for(Duration::from_millis(10));
    assert_eq!(net.received(1).len(), 1);
    assert_eq!(net.received(0).len(), 1);
    net
}

/// The last TRANSPORT the relay carried from `i`.
fn last_transport(net: &Net, i: usize) -> Flight {
    let src = net.id(i);
    net.log
        .iter()
        .rev()
        .find(|f| f.src == src && f.payload.first() == Some(&(Kind::Transport as u8)))
        .cloned()
        .expect("a transport")
}

#[test]
fn replayed_transport_is_dropped() {
    let mut net = pair();
    let a = net.id(0);
    net.send(0, 1, b"once");
    net.run_for(Duration::from_millis(10));
    assert_eq!(net.received(1), vec![(a, b"once".to_vec())]);
    let flight = last_transport(&net, 0);
    let now = net.now;
    for _ in 0..3 {
        net.nodes[1].handle_packet(now, flight.src, &flight.payload);
    }
    assert!(net.received(1).is_empty());
    assert_eq!(net.nodes[1].counters().rejected_replay, 3);
    assert_eq!(net.nodes[1].counters().packets_received, 2);
}

#[test]
fn tampered_ciphertext_is_dropped() {
    let mut net = pair();
    let a = net.id(0);
    net.filter = Box::new(|f| {
        if f.payload.first() == Some(&(Kind::Transport as u8)) && f.payload.len() > 20 {
            let at = 20 + (random_u64() as usize) % (f.payload.len() - 20);
            f.payload[at] ^= 1 << (random_u64() % 8);
        }
        Verdict::Deliver
    });
    net.send(0, 1, b"tampered");
    net.run_for(Duration::from_millis(10));
    assert!(net.received(1).is_empty());
    assert_eq!(net.nodes[1].counters().rejected_decrypt, 1);
    // The session survives: the same packet untampered goes through.
    net.filter = Box::new(|_| Verdict::Deliver);
    net.send(0, 1, b"clean");
    net.run_for(Duration::from_millis(10));
    assert_eq!(net.received(1), vec![(a, b"clean".to_vec())]);
}

#[test]
fn spoofed_source_is_dropped() {
    let mut net = Net::new(vec![E2eConfig::default(); 3]);
    net.send(0, 1, b"from a");
    net.run_for(Duration::from_millis(10));
    net.send(2, 1, b"from c");
    net.run_for(Duration::from_millis(10));
    assert_eq!(net.received(1).len(), 2);
    // A's packet relabelled with C's ID (C has a session with B too).
    net.send(0, 1, b"really from a");
    let flight = last_transport(&net, 0);
    net.flights.clear();
    let (c, now) = (net.id(2), net.now);
    net.nodes[1].handle_packet(now, c, &flight.payload);
    // And with an ID without any session.
    net.nodes[1].handle_packet(now, NodeId::from_bytes(random_seed()), &flight.payload);
    assert!(net.received(1).is_empty());
    assert_eq!(net.nodes[1].counters().rejected_spoofed, 2);
    // The genuine source still works.
    let a = net.id(0);
    net.nodes[1].handle_packet(now, a, &flight.payload);
    assert_eq!(net.received(1), vec![(a, b"really from a".to_vec())]);
}

fn with_secret(secret: [u8; 32]) -> E2eConfig {
    E2eConfig {
        network_secret: Some(secret),
        ..E2eConfig::default()
    }
}

#[test]
fn wrong_network_secret_fails_both_patterns() {
    for ik in [false, true] {
        let secret = random_seed();
        let mut other = secret;
        other[(random_u64() % 32) as usize] ^= 1;
        let mut net = Net::new(vec![with_secret(secret), with_secret(other)]);
        let b = net.id(1);
        if ik {
            let key = net.identities[1].public_key();
            net.nodes[0].add_peer_key(&key);
        }
        net.send(0, 1, b"members only");
        net.run_for(Duration::from_secs(60));
        let retries = u64::from(E2eConfig::default().handshake_retries);
        assert_eq!(
            net.nodes[1].counters().rejected_network_secret,
            retries,
            "ik {ik}"
        );
        assert_eq!(net.nodes[1].counters().responses_sent, 0);
        assert!(net.received(1).is_empty());
        let events = net.take_events(0);
        assert!(events.contains(&E2eEvent::Failed {
            peer: b,
            reason: FailReason::Timeout
        }));
        assert!(events.contains(&E2eEvent::Undeliverable {
            dst: b,
            reason: UndeliverableReason::HandshakeFailed,
            head: b"members only".to_vec()
        }));
        assert_eq!(net.nodes[0].queued(), (0, 0));
    }
    // The same secret completes.
    let secret = random_seed();
    let mut net = Net::new(vec![with_secret(secret), with_secret(secret)]);
    net.send(0, 1, b"members only");
    net.run_for(Duration::from_millis(10));
    assert_eq!(net.received(1).len(), 1);
}

#[test]
fn allowlist_refuses_others() {
    let mut net = Net::new(vec![E2eConfig::default(); 3]);
    let (a, c) = (net.id(0), net.id(2));
    net.nodes[1] = Endpoints::new(
        &net.identities[1],
        E2eConfig {
            allowlist: Some(BTreeSet::from([c])),
            ..E2eConfig::default()
        },
        random_seed(),
    );
    net.send(0, 1, b"not allowed");
    net.send(2, 1, b"allowed");
    net.run_for(Duration::from_secs(60));
    assert_eq!(net.received(1), vec![(c, b"allowed".to_vec())]);
    let retries = u64::from(E2eConfig::default().handshake_retries);
    assert_eq!(net.nodes[1].counters().rejected_not_allowed, retries);
    assert!(
        net.take_events(0)
            .iter()
            .any(|e| matches!(e, E2eEvent::Failed { .. }))
    );
    // B may still open a session with A.
    net.send(1, 0, b"b to a");
    net.run_for(Duration::from_millis(10));
    assert!(net.received(0).contains(&(net.id(1), b"b to a".to_vec())));
    let _ = a;
}

/// Streams packets both ways every `interval` for `duration` over a relay
/// with latency and reordering, and checks each arrived exactly once.
fn stream(net: &mut Net, interval: Duration, duration: Duration) -> (usize, usize) {
    let (a, b) = (net.id(0), net.id(1));
    let mut sent: [BTreeSet<u64>; 2] = [BTreeSet::new(), BTreeSet::new()];
    let mut got: [BTreeMap<u64, usize>; 2] = [BTreeMap::new(), BTreeMap::new()];
    let end = net.now + duration;
    let mut n = 0u64;
    while net.now < end {
        for (from, sent) in sent.iter_mut().enumerate() {
            n += 1;
            net.send(from, 1 - from, &n.to_be_bytes());
            sent.insert(n);
        }
        net.run_for(interval);
        for to in 0..2 {
            for (src, p) in net.received(to) {
                assert_eq!(src, if to == 0 { b } else { a });
                let value = u64::from_be_bytes(p.try_into().expect("8 bytes"));
                *got[1 - to].entry(value).or_default() += 1;
            }
        }
    }
    net.run_for(Duration::from_secs(1));
    for to in 0..2 {
        for (_, p) in net.received(to) {
            let value = u64::from_be_bytes(p.try_into().expect("8 bytes"));
            *got[1 - to].entry(value).or_default() += 1;
        }
    }
    for from in 0..2 {
        let lost: Vec<u64> = sent[from]
            .iter()
            .filter(|v| !got[from].contains_key(v))
            .copied()
            .collect();
        assert!(
            lost.is_empty(),
            "lost from {from}: {} e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
        assert!(got[from].values().all(|c| *c == 1), "duplicates");
        assert_eq!(got[from].len(), sent[from].len());
    }
    (sent[0].len(), sent[1].len())
}

#[test]
fn rekey_by_time_during_a_stream_loses_nothing() {
    let mut net = two();
    net.base = Duration::from_millis(20);
    net.jitter_ms = 30;
    stream(
        &mut net,
        Duration::from_millis(100),
        Duration::from_secs(400),
    );
    let rekeys = net.nodes[0].counters().rekeys + net.nodes[1].counters().rekeys;
    // 400 s at one rekey per 120 s: three on each side.
    assert!(rekeys >= 6, "{rekeys}");
    for i in 0..2 {
        assert_eq!(net.nodes[i].counters().rejected_expired, 0);
        assert_eq!(net.nodes[i].counters().rejected_decrypt, 0);
        // Not rejected_unknown_index: both ends start at once, and a late
        // answer to the handshake that lost the collision is unknown.
        assert!(net.nodes[i].keypair_count() <= 1 + PREVIOUS_KEYS_MAX);
        assert!(net.nodes[i].counters().handshakes_failed == 0);
    }
}

#[test]
fn rekey_by_messages_during_a_stream_loses_nothing() {
    let config = E2eConfig {
        rekey_after_messages: 50,
        ..E2eConfig::default()
    };
    let mut net = Net::new(vec![config.clone(), config]);
    net.base = Duration::from_millis(10);
    net.jitter_ms = 20;
    let (sent, _) = stream(&mut net, Duration::from_millis(5), Duration::from_secs(10));
    let rekeys = net.nodes[0].counters().rekeys + net.nodes[1].counters().rekeys;
    assert!(
        rekeys as usize >= sent / 50,
        "{rekeys} rekeys for {sent} packets"
    );
}

#[test]
fn keys_expire_when_rekeys_fail() {
    let mut net = pair();
    let b = net.id(1);
    // From now on nothing but transports get through: rekeys fail.
    net.filter = Box::new(|f| {
        if f.payload.first() == Some(&(Kind::Transport as u8)) {
            Verdict::Deliver
        } else {
            Verdict::Drop
        }
    });
    // Past reject_after (180 s) with data every 10 s, so never idle.
    for _ in 0..20 {
        net.send(0, 1, b"keep busy");
        net.run_for(Duration::from_secs(10));
    }
    assert!(net.nodes[0].counters().handshakes_failed >= 1);
    let events = net.take_events(0);
    assert!(
        events.contains(&E2eEvent::Closed {
            peer: b,
            reason: CloseReason::Expired
        }),
        "{events:?}"
    );
    assert!(net.nodes[0].sending_keys(net.now, &b).is_none());
}

#[test]
fn cookie_reply_under_a_flood_and_the_legitimate_initiator_completes() {
    let config = E2eConfig {
        handshakes_per_sec: 20,
        ..E2eConfig::default()
    };
    let mut net = Net::new(vec![E2eConfig::default(), config]);
    let (a, b) = (net.id(0), net.id(1));
    let flood = 2000;
    let mac1_key = crypto::mac1_key(&b);
    let now = net.now;
    // Initiations with a valid mac1 from random sources (they never see a
    // cookie: the relay has no node for their IDs).
    for i in 0..flood {
        let mut message = vec![0u8; wire::INIT_LEN];
        getrandom::getrandom(&mut message).expect("OS randomness");
        message[0] = if i % 2 == 0 {
            Kind::XxInit
        } else {
            Kind::IkInit
        } as u8;
        message[1..4].fill(0);
        message[4] |= 1;
        message[8..12].fill(0);
        let mac1 = crypto::mac(&mac1_key, &message[..MAC1_OFFSET]);
        message[MAC1_OFFSET..MAC1_OFFSET + MAC_LEN].copy_from_slice(&mac1);
        net.nodes[1].handle_packet(now, NodeId::from_bytes(random_seed()), &message);
    }
    let c = net.nodes[1].counters();
    // Diffie-Hellman work (or a psk check) only while the bucket is above
    // half; everything else got a cookie reply.
    let worked = c.rejected_network_secret + c.responses_sent + c.rejected_bad_key;
    assert!(worked <= 11, "{c:?}");
    assert_eq!(c.cookie_replies_sent, flood - worked, "{c:?}");
    assert!(net.nodes[1].handshake_count() <= 11);
    net.collect();
    net.flights.clear();
    // Still under load: A's initiation gets a cookie, A resends with mac2
    // and completes.
    net.send(0, 1, b"legit");
    net.run_for(Duration::from_millis(10));
    assert_eq!(net.received(1), vec![(a, b"legit".to_vec())]);
    assert_eq!(net.nodes[0].counters().cookie_replies_received, 1);
    assert_eq!(
        net.nodes[1].counters().cookie_replies_sent,
        flood - worked + 1
    );
    assert!(net.kinds_from(1).contains(&Kind::CookieReply));
}

#[test]
fn limits_hold_under_floods() {
    // Queues: an unreachable destination, then many.
    let config = E2eConfig {
        queue_per_peer_max: 8,
        queue_total_max: 50,
        handshakes_max: 16,
        ..E2eConfig::default()
    };
    let mut net = Net::new(vec![config.clone(), E2eConfig::default()]);
    net.filter = Box::new(|_| Verdict::Drop);
    let b = net.id(1);
    for _ in 0..100 {
        net.send(0, 1, b"queued");
    }
    assert_eq!(net.nodes[0].queued().0, 8);
    assert_eq!(net.nodes[0].counters().queue_dropped, 92);
    let full = net
        .take_events(0)
        .iter()
        .filter(|e| {
            matches!(e, E2eEvent::Undeliverable { dst, reason: UndeliverableReason::QueueFull, .. } if *dst == b)
        })
        .count();
    assert_eq!(full, 92);
    let now = net.now;
    for _ in 0..40 {
        let dst = NodeId::from_bytes(random_seed());
        for _ in 0..10 {
            net.nodes[0].send(now, dst, b"x").expect("valid");
        }
        assert!(net.nodes[0].queued().0 <= 50);
        assert!(net.nodes[0].handshake_count() <= 16);
    }
    net.run_for(Duration::from_secs(60));
    assert_eq!(net.nodes[0].queued(), (0, 0));
    assert_eq!(net.nodes[0].handshake_count(), 0);

    // Responder: many real initiators, B's responses dropped so their
    // handshakes stay half-open (cookie replies pass).
    let b_config = E2eConfig {
        handshakes_max: 8,
        sessions_max: 3,
        handshakes_per_sec: 10_000,
        rate_sources_max: 16,
        ..E2eConfig::default()
    };
    let mut configs = vec![b_config];
    configs.extend(std::iter::repeat_n(E2eConfig::default(), 30));
    let mut net = Net::new(configs);
    let responder = net.id(0);
    net.filter = Box::new(move |f| {
        let response = f.payload.first() == Some(&(Kind::XxResponse as u8));
        if f.src == responder && response {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    });
    for i in 1..31 {
        net.send(i, 0, b"hi");
        assert!(net.nodes[0].handshake_count() <= 8);
    }
    net.run_for(Duration::from_millis(1));
    let c = net.nodes[0].counters();
    assert!(net.nodes[0].handshake_count() <= 8);
    assert!(c.handshakes_evicted > 0, "{c:?}");
    assert!(c.cookie_replies_sent > 0, "{c:?}");
    assert!(net.nodes[0].rate_sources() <= 16);
    // Now let responses through: at most sessions_max sessions.
    net.filter = Box::new(|_| Verdict::Deliver);
    net.run_for(Duration::from_secs(30));
    assert_eq!(net.nodes[0].session_count(), 3);
    assert!(net.nodes[0].counters().rejected_sessions_full > 0);

    // One source repeating fresh initiations hits its rate limit (and a
    // table of one source refuses a second).
    let config = E2eConfig {
        handshakes_per_source_per_sec: 2,
        rate_sources_max: 1,
        ..E2eConfig::default()
    };
    let mut net = Net::new(vec![config, E2eConfig::default(), E2eConfig::default()]);
    let (responder, noisy, now) = (net.id(0), net.id(1), net.now);
    for _ in 0..10 {
        let mut fresh = Endpoints::new(&net.identities[1], E2eConfig::default(), random_seed());
        fresh.send(now, responder, b"again").expect("valid");
        while let Some((_, payload)) = fresh.poll_transmit() {
            net.nodes[0].handle_packet(now, noisy, &payload);
        }
    }
    let c = net.nodes[0].counters();
    assert_eq!(c.responses_sent, 2, "{c:?}");
    assert_eq!(c.rejected_rate_limited, 8, "{c:?}");
    net.send(2, 0, b"other source");
    net.deliver_due();
    assert_eq!(net.nodes[0].counters().rejected_rate_limited, 9);
    assert_eq!(net.nodes[0].rate_sources(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random bytes and mutations of real messages never panic and never
    /// deliver anything.
    #[test]
    fn handle_packet_never_panics(
        garbage in proptest::collection::vec(any::<u8>(), 0..300),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        kind in 1u8..=7,
    ) {
        let mut net = pair();
        let (a, now) = (net.id(0), net.now);
        net.nodes[1].handle_packet(now, a, &garbage);
        let mut g = garbage.clone();
        if !g.is_empty() {
            g[0] = kind;
        }
        net.nodes[1].handle_packet(now, a, &g);
        net.send(0, 1, b"mutate me");
        let mut payload = last_transport(&net, 0).payload;
        for (at, x) in flips {
            let i = at % payload.len();
            payload[i] ^= x.max(1);
        }
        net.flights.clear();
        net.nodes[1].handle_packet(now, a, &payload);
        prop_assert!(net.received(1).is_empty());
    }
}
