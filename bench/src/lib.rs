//! xorlay-bench: the namespace lab, traffic generator and sink that the
//! demo, the integration tests and the benchmarks share.

pub mod compare;
pub mod endpoint;
pub mod geneval;
pub mod lab;
pub mod livegen;
pub mod loadgen;
pub mod netns;
pub mod relay;
pub mod report;
pub mod ringgen;
pub mod systems;
pub mod traffic;
pub mod xdpsink;

use std::time::{Duration, Instant};

/// Polls `condition` every 10 ms until it holds or `timeout` passes.
/// Returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
