//! The control plane, static for now: the neighbors come from the config,
//! the next-hop table is built once and published to the workers. The
//! Kademlia control plane replaces `static_table` with a live routing table
//! and publishes through the same [`SharedTable`].

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Neighbor;
use crate::core::NodeId;
use crate::core::table::{NextHopTable, TableError};
use crate::io::topology::{Hop, SharedTable, hop_for};

/// The next-hop table of a static neighbor list, addressed for sockets bound to `listen`.
pub fn static_table(
    local: NodeId,
    listen: &SocketAddr,
    neighbors: &[Neighbor],
) -> Result<NextHopTable<Hop>, TableError> {
    NextHopTable::new(
        local,
        neighbors.iter().map(|n| (n.id, hop_for(listen, n.address))),
    )
}

/// A table shared with the workers.
pub fn share(table: NextHopTable<Hop>) -> SharedTable {
    Arc::new(ArcSwap::from_pointee(table))
}

/// Publishes a new table: workers pick it up at their next receive batch.
pub fn publish(shared: &SharedTable, table: NextHopTable<Hop>) {
    shared.store(Arc::new(table));
}
