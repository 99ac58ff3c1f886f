//! Steering of overlay datagrams across the workers' SO_REUSEPORT sockets
//! by a hash of their overlay destination and source (ebpf/steer.bpf.c), so
//! that one neighbor's traffic (a single UDP 4-tuple, which the kernel's own
//! choice would pin to one worker) is spread across workers per overlay flow.

use std::os::fd::AsRawFd;

use aya::maps::ReusePortSockArray;
use aya::programs::SkReuseport;
use aya::{Ebpf, EbpfLoader};
use socket2::Socket;

/// The compiled steering program.
static STEER_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/steer.bpf.o"));

/// Most sockets the program can choose from (`XORLAY_WORKERS_MAX`, the
/// router's workers limit).
pub const SOCKETS_MAX: usize = crate::wire::consts::WORKERS_MAX;

/// Why steering could not be set up.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot steer datagrams across workers ({step}): {detail}; the kernel's 4-tuple hashing is used instead"
)]
pub struct SteerError {
    step: &'static str,
    detail: String,
}

fn fail(step: &'static str) -> impl Fn(String) -> SteerError {
    move |detail| SteerError { step, detail }
}

/// The loaded steering program; the sockets keep it attached to their group.
#[derive(Debug)]
pub struct Steering {
    _ebpf: Ebpf,
}

impl Steering {
    /// Attaches steering to the SO_REUSEPORT group of `sockets` (all bound
    /// to the same address; index i of the program's choice is `sockets[i]`).
    pub fn attach(sockets: &[&Socket]) -> Result<Steering, SteerError> {
        if sockets.is_empty() || sockets.len() > SOCKETS_MAX {
            return Err(fail("sockets")(format!(
                "{} sockets, 1 to {SOCKETS_MAX} supported",
                sockets.len()
            )));
        }
        let count = u32::try_from(sockets.len()).map_err(|e| fail("sockets")(e.to_string()))?;
        let mut ebpf = EbpfLoader::new()
            .override_global("xorlay_worker_count", &count, true)
            .load(STEER_OBJECT)
            .map_err(|e| fail("load")(format!("{e:#}")))?;
        let map = ebpf
            .map_mut("xorlay_workers")
            .ok_or_else(|| fail("map")("xorlay_workers missing".into()))?;
        let mut workers: ReusePortSockArray<_> =
            map.try_into().map_err(|e| fail("map")(format!("{e}")))?;
        for (index, socket) in (0u32..).zip(sockets) {
            workers
                .set(index, &socket.as_raw_fd(), 0)
                .map_err(|e| fail("map set")(format!("{e}")))?;
        }
        let program: &mut SkReuseport = ebpf
            .program_mut("xorlay_steer")
            .ok_or_else(|| fail("program")("xorlay_steer missing".into()))?
            .try_into()
            .map_err(|e| fail("program")(format!("{e}")))?;
        program
            .load()
            .map_err(|e| fail("verifier")(format!("{e:#}")))?;
        program
            .attach(sockets[0])
            .map_err(|e| fail("attach")(format!("{e:#}")))?;
        Ok(Steering { _ebpf: ebpf })
    }
}
