//! The seam between the control plane and the data plane. The control
//! thread builds a [`Topology`] (`core::topology`) and publishes it here;
//! workers load the current snapshot without locks (one atomic load per
//! completion batch).

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use socket2::SockAddr;

use crate::core::topology::{Topology, socket_form};

/// How a worker reaches a neighbor: a socket address in the family of the
/// workers' sockets, ready for `sendmsg`.
pub type Hop = SockAddr;

/// The topology shared by the control thread (writer) and the workers.
pub type SharedTable = Arc<ArcSwap<Topology<Hop>>>;

/// Shares a topology with the workers.
pub fn share(topology: Topology<Hop>) -> SharedTable {
    Arc::new(ArcSwap::from_pointee(topology))
}

/// The address to send to a neighbor at `neighbor` from a socket bound to `listen`.
pub fn hop_for(listen: &SocketAddr, neighbor: SocketAddr) -> Hop {
    SockAddr::from(socket_form(listen, neighbor))
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
