//! The program's clock (`CLOCK_MONOTONIC_COARSE`) read from userspace, and
//! the step it moves in.

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds: the clock of the program
/// (`bpf_ktime_get_coarse_ns`).
pub(super) fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to write.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    // It cannot fail on Linux (2.6.32+); on failure `now` stays 0, which
    // only makes the entry look old (a miss sooner), never wrong.
    debug_assert_eq!(rc, 0);
    timespec_ns(&now)
}

pub(super) fn timespec_ns(t: &libc::timespec) -> u64 {
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// How far the program's clock moves per step: the resolution of
/// `CLOCK_MONOTONIC_COARSE` (one kernel tick, 1-10 ms). 10 ms if the kernel
/// does not say (the longest tick Linux has, so bursts are never too small).
pub fn clock_step_ns() -> u64 {
    static STEP: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *STEP.get_or_init(|| {
        let mut res = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `res` is a valid timespec for the call to write.
        let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) };
        match timespec_ns(&res) {
            ns if rc == 0 && ns > 0 => ns,
            _ => 10_000_000,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0);
        assert!(b >= a);
    }
}
