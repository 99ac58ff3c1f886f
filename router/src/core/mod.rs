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
