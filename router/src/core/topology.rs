//! What the data plane needs to know about the network, as one snapshot: a
//! [`Topology`] (next-hop table and the neighbors whose data packets are
//! accepted), and the underlay address forms the workers' sockets use. The
//! control thread builds the snapshot and `io::topology` publishes it.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};

use super::table::NextHopTable;
use crate::id::NodeId;

/// What the data plane needs to know about the network, as one snapshot.
/// `A` is how a worker reaches a neighbor (`io::topology::Hop`).
#[derive(Debug)]
pub struct Topology<A> {
    /// Next hops: the live neighbors.
    pub table: NextHopTable<A>,
    /// Underlay IP addresses (in the workers' socket family) whose data
    /// packets are accepted, from any UDP port: the neighbors with an
    /// authenticated session (a neighbor's XDP fast path forwards from flow
    /// ports, `wire::overlay::Packet::flow_port`, so its data does not come
    /// from its overlay port). `None` accepts data from any address (tests of
    /// the forwarding path only).
    allowed: Option<HashSet<IpAddr>>,
    /// The authenticated peers (socket addresses) the snapshot was made from.
    peers: usize,
}

impl<A> Topology<A> {
    /// A snapshot that accepts data only from `allowed` (socket-family addresses, see [`socket_form`]).
    pub fn new(table: NextHopTable<A>, allowed: HashSet<SocketAddr>) -> Topology<A> {
        Topology {
            table,
            peers: allowed.len(),
            allowed: Some(allowed.iter().map(SocketAddr::ip).collect()),
        }
    }

    /// A snapshot that accepts data from anyone: for tests of forwarding.
    pub fn open(table: NextHopTable<A>) -> Topology<A> {
        Topology {
            table,
            allowed: None,
            peers: 0,
        }
    }

    /// An empty snapshot for `local`: no neighbors, nothing accepted.
    pub fn empty(local: NodeId) -> Topology<A> {
        Topology::new(NextHopTable::empty(local), HashSet::new())
    }

    /// Whether data packets from `source` (as received on a worker socket)
    /// are accepted: its IP is a neighbor's, whatever the port.
    pub fn accepts(&self, source: &SocketAddr) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|set| set.contains(&source.ip()))
    }

    /// Number of authenticated peers whose data is accepted (`None`: all).
    pub fn allowed_len(&self) -> Option<usize> {
        self.allowed.as_ref().map(|_| self.peers)
    }
}

/// `addr` as a socket bound to `listen` sees and addresses it: an IPv6
/// socket sees IPv4 peers as v4-mapped addresses.
pub fn socket_form(listen: &SocketAddr, addr: SocketAddr) -> SocketAddr {
    match (listen, addr) {
        (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        (_, addr) => addr,
    }
}

/// The address, in the underlay's own form: v4-mapped IPv6 back to IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => addr,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_peer_of_v6_socket_is_mapped() {
        let listen: SocketAddr = "[::]:4799".parse().expect("literal");
        let peer: SocketAddr = "198.18.0.2:4799".parse().expect("literal");
        assert_eq!(
            socket_form(&listen, peer),
            "[::ffff:198.18.0.2]:4799"
                .parse::<SocketAddr>()
                .expect("literal")
        );
        let listen4: SocketAddr = "0.0.0.0:4799".parse().expect("literal");
        assert_eq!(socket_form(&listen4, peer), peer);
    }

    #[test]
    fn canonical_undoes_socket_form() {
        let listen: SocketAddr = "[::]:4799".parse().expect("literal");
        for addr in ["198.18.0.2:4799", "[fd00::1]:4799"] {
            let addr: SocketAddr = addr.parse().expect("literal");
            assert_eq!(canonical(socket_form(&listen, addr)), addr);
        }
    }

    #[test]
    fn allowlist() {
        let local = NodeId::from_bytes([1; 32]);
        let a: SocketAddr = "[::ffff:198.18.0.2]:4799".parse().expect("literal");
        let b: SocketAddr = "[::ffff:198.18.0.3]:4799".parse().expect("literal");
        let t: Topology<()> = Topology::new(NextHopTable::empty(local), [a].into_iter().collect());
        assert!(t.accepts(&a));
        assert!(!t.accepts(&b));
        // A neighbor's fast path forwards from its flow ports.
        let a_flow: SocketAddr = "[::ffff:198.18.0.2]:51234".parse().expect("literal");
        assert!(t.accepts(&a_flow));
        assert_eq!(t.allowed_len(), Some(1));
        assert!(Topology::<()>::open(NextHopTable::empty(local)).accepts(&b));
        assert!(!Topology::<()>::empty(local).accepts(&a));
    }
}
