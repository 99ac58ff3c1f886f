//! The seam between the control plane and the data plane: the control
//! thread builds a `NextHopTable` and publishes it; workers load the current
//! snapshot without locks (one atomic load per receive batch).

use std::net::{SocketAddr, SocketAddrV6};
use std::sync::Arc;

use arc_swap::ArcSwap;
use socket2::SockAddr;

use crate::core::NextHopTable;

/// How a worker reaches a neighbor: a socket address in the family of the
/// workers' sockets, ready for `sendmsg`.
pub type Hop = SockAddr;

/// The next-hop table shared by the control thread (writer) and the workers.
pub type SharedTable = Arc<ArcSwap<NextHopTable<Hop>>>;

/// The address to send to a neighbor at `neighbor` from a socket bound to
/// `listen`: an IPv6 socket reaches IPv4 neighbors through v4-mapped addresses.
pub fn hop_for(listen: &SocketAddr, neighbor: SocketAddr) -> Hop {
    match (listen, neighbor) {
        (SocketAddr::V6(_), SocketAddr::V4(v4)) => SockAddr::from(SocketAddr::V6(
            SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0),
        )),
        (_, addr) => SockAddr::from(addr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_neighbor_from_v6_socket_is_mapped() {
        let listen: SocketAddr = "[::]:4799".parse().expect("literal");
        let hop = hop_for(&listen, "198.18.0.2:4799".parse().expect("literal"));
        assert_eq!(
            hop.as_socket(),
            Some("[::ffff:198.18.0.2]:4799".parse().expect("literal"))
        );
        let listen4: SocketAddr = "0.0.0.0:4799".parse().expect("literal");
        let hop4 = hop_for(&listen4, "198.18.0.2:4799".parse().expect("literal"));
        assert_eq!(
            hop4.as_socket(),
            Some("198.18.0.2:4799".parse().expect("literal"))
        );
    }
}
