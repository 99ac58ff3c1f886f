//! The all-pairs exchange of the mesh lab tests: every ordered pair of
//! nodes sends numbered packets in rounds through its local application.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use xorlay_bench::lab::Lab;
use xorlay_bench::traffic::AppSocket;

/// Every node's local application, bound in its namespace.
pub fn bind_apps(lab: &Lab) -> Vec<AppSocket> {
    lab.nodes
        .iter()
        .map(|n| {
            AppSocket::bind_in(&n.netns, Lab::app_addr(), n.id(), ROUNDS_MAX * PACKETS)
                .unwrap_or_else(|e| panic!("{} app: {e:#}", n.role))
        })
        .collect()
}

/// Every ordered pair of the `count` nodes, which `edges` must connect.
pub fn all_pairs(count: usize, edges: &[(usize, usize)]) -> BTreeSet<(usize, usize)> {
    let all: BTreeSet<usize> = (0..count).collect();
    let pairs = connected_pairs(&all, edges);
    assert_eq!(pairs.len(), count * (count - 1), "the mesh is connected");
    pairs
}

/// Packets per ordered pair and round.
pub const PACKETS: u64 = 5;
/// Rounds at most (sequence numbers are round * PACKETS + k).
pub const ROUNDS_MAX: u64 = 100;
/// Overlay payload bytes per packet.
pub const PAYLOAD: usize = 64;

/// Rounds of sending: round r sends sequence numbers r * PACKETS .. (r +
/// 1) * PACKETS for each pair still waiting.
#[derive(Default)]
pub struct Exchange {
    /// Rounds sent so far.
    pub rounds: u64,
}

impl Exchange {
    /// Sends rounds for `pairs` (source, destination), each waiting up to
    /// `round_wait` for its packets, until every pair has had all packets
    /// of one round arrive, or `timeout` passes, or `rounds` rounds were
    /// sent. Returns how long it took, or the pairs that did not deliver.
    pub fn until_delivered(
        &mut self,
        lab: &Lab,
        apps: &mut [AppSocket],
        pairs: &BTreeSet<(usize, usize)>,
        timeout: Duration,
        round_wait: Duration,
        rounds: u64,
    ) -> Result<Duration, BTreeSet<(usize, usize)>> {
        let start = Instant::now();
        let deadline = start + timeout;
        let last = (self.rounds + rounds).min(ROUNDS_MAX);
        let mut waiting = pairs.clone();
        while !waiting.is_empty() && Instant::now() < deadline && self.rounds < last {
            let seqs = self.rounds * PACKETS..(self.rounds + 1) * PACKETS;
            self.rounds += 1;
            // Each source's packets, one destination after another, with a
            // short pause per source: far below any queue's limit.
            let mut by_src: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for &(src, dst) in &waiting {
                by_src.entry(src).or_default().push(dst);
            }
            for (&src, dsts) in &by_src {
                for &dst in dsts {
                    let sent = apps[src].send(
                        &lab.nodes[dst].id(),
                        Lab::router_local_addr(),
                        seqs.clone(),
                        PAYLOAD,
                    );
                    assert_eq!(
                        sent.sent, PACKETS,
                        "{} could not send to its router: {sent:?}",
                        lab.nodes[src].role
                    );
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            // Collect until this round's packets are in or the round's time
            // is up.
            let round_end = (Instant::now() + round_wait).min(deadline);
            loop {
                for app in apps.iter_mut() {
                    app.drain().unwrap_or_else(|e| panic!("{e:#}"));
                }
                waiting.retain(|&(src, dst)| {
                    apps[dst].received(&lab.nodes[src].id(), seqs.clone()) < PACKETS as usize
                });
                if waiting.is_empty() || Instant::now() >= round_end {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if waiting.is_empty() {
            Ok(start.elapsed())
        } else {
            Err(waiting)
        }
    }
}

/// Ordered pairs of distinct nodes of `alive` joined by a path through
/// `alive` over `edges`.
pub fn connected_pairs(
    alive: &BTreeSet<usize>,
    edges: &[(usize, usize)],
) -> BTreeSet<(usize, usize)> {
    let mut pairs = BTreeSet::new();
    for &from in alive {
        let mut seen = BTreeSet::from([from]);
        let mut stack = vec![from];
        while let Some(n) = stack.pop() {
            for &(a, b) in edges {
                let next = match (a == n, b == n) {
                    (true, _) => b,
                    (_, true) => a,
                    _ => continue,
                };
                if alive.contains(&next) && seen.insert(next) {
                    stack.push(next);
                }
            }
        }
        pairs.extend(
            seen.into_iter()
                .filter(|&to| to != from)
                .map(|to| (from, to)),
        );
    }
    pairs
}

/// Nothing malformed, for someone else, or twice at any application.
pub fn check_clean(lab: &Lab, apps: &[AppSocket]) {
    for (i, app) in apps.iter().enumerate() {
        assert_eq!(
            (app.duplicates, app.wrong_dst, app.malformed, app.untracked),
            (0, 0, 0, 0),
            "{}: duplicates, wrong destination, malformed, untracked",
            lab.nodes[i].role
        );
    }
}

/// The first 40 of `pairs`, by role.
pub fn names(lab: &Lab, pairs: &BTreeSet<(usize, usize)>) -> String {
    const SHOWN: usize = 40;
    let mut text = pairs
        .iter()
        .take(SHOWN)
        .map(|&(a, b)| format!("{}->{}", lab.nodes[a].role, lab.nodes[b].role))
        .collect::<Vec<_>>()
        .join(" ");
    if pairs.len() > SHOWN {
        text.push_str(" ...");
    }
    text
}

/// Fisher-Yates with OS randomness.
pub fn shuffle(items: &mut [usize]) {
    for i in (1..items.len()).rev() {
        let mut bytes = [0u8; 8];
        getrandom::getrandom(&mut bytes).expect("OS randomness");
        let j = (u64::from_le_bytes(bytes) % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}
