//! [`ShedBudget`]: the budget of data packets XDP passes to the workers
//! while their sockets overflow (`xorlay_shed`).

use std::fmt;

use aya::Ebpf;
use aya::maps::{Array, MapData};

use super::abi::Shed;
use super::clock::clock_step_ns;
use super::error::{BpfError, chain};
use crate::config::RateLimit;

/// The map of the workers' shedding budget (`struct xorlay_shed`).
pub const SHED_MAP_NAME: &str = "xorlay_shed";

/// The budget of data packets XDP passes to the workers (map
/// `xorlay_shed`), set by the control thread while the workers' sockets
/// overflow ([`crate::core::shed::Shedder`]). The only writer of the map.
pub struct ShedBudget {
    map: Array<MapData, Shed>,
    current: Option<crate::core::shed::Budget>,
}

impl ShedBudget {
    /// Sets the budget (`None`: no budget, everything passes).
    pub fn set(&mut self, budget: Option<crate::core::shed::Budget>) -> Result<(), BpfError> {
        if budget == self.current {
            return Ok(());
        }
        let value = budget.map_or(Shed::default(), |b| {
            let limit = RateLimit::new(b.pps, b.burst).for_clock_step(clock_step_ns());
            Shed {
                pps: limit.pps,
                burst: limit.burst,
            }
        });
        self.map
            .set(0, value, 0)
            .map_err(|e| BpfError::RouteCache {
                action: "write",
                map: SHED_MAP_NAME,
                detail: chain(&e),
            })?;
        self.current = budget;
        Ok(())
    }

    /// The budget in force.
    pub fn current(&self) -> Option<crate::core::shed::Budget> {
        self.current
    }
}

impl fmt::Debug for ShedBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShedBudget")
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

/// Takes the handle of the workers' shedding budget out of a loaded object.
pub fn take_shed_budget(ebpf: &mut Ebpf) -> Result<ShedBudget, BpfError> {
    let map = ebpf
        .take_map(SHED_MAP_NAME)
        .ok_or(BpfError::MissingObject {
            kind: "map",
            name: SHED_MAP_NAME,
        })?;
    let map = Array::try_from(map).map_err(|e| BpfError::RouteCache {
        action: "open",
        map: SHED_MAP_NAME,
        detail: chain(&e),
    })?;
    Ok(ShedBudget { map, current: None })
}
