//! The shells around the sans-IO core: the XDP program's loader, the
//! io_uring workers, the control thread and the admin socket. They parse and
//! decide nothing themselves: `wire` parses, `core` decides.

pub mod admin;
pub mod backlog;
pub mod bpf;
pub mod control;
pub mod holder;
pub mod keyfile;
pub mod preflight;
pub mod privilege;
pub mod ratelog;
pub mod router;
pub mod stats;
pub mod steer;
pub mod topology;
pub mod tun;
pub mod txwatch;
pub mod worker;
