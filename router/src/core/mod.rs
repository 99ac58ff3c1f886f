//! Sans-IO logic: no sockets, no clocks, no randomness. The next-hop table
//! and the forwarding decision live here; `io` drives them. Node IDs are
//! [`crate::id`], below `wire`, re-exported here.

pub mod forward;
pub mod identity;
pub mod kademlia;
pub mod node;
pub mod session;
pub mod shed;
pub mod table;

pub use crate::id::{Distance, NodeId};
pub use forward::{DropReason, Verdict, decide};
pub use table::NextHopTable;
