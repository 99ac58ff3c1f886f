//! xorlay: an overlay router. Packets carry 256-bit destination node IDs and
//! travel hop by hop to the neighbor XOR-closest to the destination.
//!
//! - [`id`]: 256-bit node IDs and the XOR metric; imports nothing.
//! - [`wire`]: bytes to structure, no state.
//! - [`core`]: sans-IO logic: next-hop table, forwarding decision, sessions.
//! - [`io`]: the shells: XDP loader, io_uring workers, control thread.
//! - [`config`]: the router's TOML configuration.

pub mod config;
pub mod core;
pub mod id;
pub mod io;
pub mod wire;
