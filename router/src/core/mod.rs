//! Sans-IO logic: no sockets, no clocks, no randomness. Node IDs, the
//! next-hop table and the forwarding decision live here; `io` drives them.

pub mod forward;
pub mod identity;
pub mod kademlia;
pub mod node;
pub mod node_id;
pub mod session;
pub mod shed;
pub mod table;

pub use forward::{DropReason, Verdict, decide};
pub use node_id::{Distance, NodeId};
pub use table::NextHopTable;
