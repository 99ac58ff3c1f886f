//! Sans-IO logic: no sockets, no clocks, no randomness. The next-hop table,
//! the topology snapshot and the per-packet step of the data plane live
//! here; `io` drives them. Node IDs are
//! [`crate::id`], below `wire`, re-exported here.

pub mod address;
pub mod e2e;
pub mod forward;
pub mod icmp;
pub mod identity;
pub mod install;
pub mod kademlia;
pub mod node;
pub mod resolve;
pub mod routing;
pub mod session;
pub mod shed;
pub mod table;
pub mod topology;

pub use crate::id::{Distance, NodeId};
pub use forward::{
    Action, DropReason, Forwarder, Header, Install, Origin, Route, Verdict, decide, route,
};
pub use table::NextHopTable;

/// Makes room for `key` in `map`, a cache of at most `max` entries: if
/// `key` is new and the map is full, the entry expiring first goes.
pub(crate) fn make_room<K, V>(
    map: &mut std::collections::HashMap<K, V>,
    key: &K,
    max: usize,
    expires: impl Fn(&V) -> std::time::Instant,
) where
    K: std::hash::Hash + Eq + Copy,
{
    if !map.contains_key(key)
        && map.len() >= max
        && let Some(first) = map.iter().min_by_key(|(_, v)| expires(v)).map(|(k, _)| *k)
    {
        map.remove(&first);
    }
}
