//! Bytes to structure and back, with no state.
//!
//! The contract, as in smoltcp: a `Packet<T: AsRef<[u8]>>` is a zero-copy
//! view over a buffer. `Packet::new_unchecked` wraps any buffer;
//! `Packet::check_len` verifies the buffer is long enough for every field, and
//! once it has succeeded no accessor panics. Untrusted input always goes
//! through `Packet::new_checked`. A `Repr` is the validated, owned value:
//! `Repr::parse` checks every rule of the format, `Repr::emit` writes it.
//!
//! The byte layout is not defined here: `ebpf/wire.h` is canonical, and
//! `consts` holds the constants generated from it. The field ranges below are
//! asserted against those constants at compile time.

pub mod consts;
pub mod e2e;
pub mod kad;
pub mod overlay;
pub mod route;
pub mod session;

pub use overlay::{
    Error as OverlayError, Packet as OverlayPacket, PacketType, Repr as OverlayRepr,
};

/// A range of bytes in a header.
pub type Field = core::ops::Range<usize>;
