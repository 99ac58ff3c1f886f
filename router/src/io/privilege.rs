//! Which capabilities this process has, read before anything is loaded, so
//! a missing one is named instead of surfacing as a misleading kernel error
//! (without CAP_PERFMON the verifier refuses the program with EACCES, which
//! reads like a verifier bug).

use std::fmt;

/// `CAP_NET_ADMIN`: attaching XDP, forcing socket buffers.
pub const CAP_NET_ADMIN: u32 = 12;
/// `CAP_SYS_ADMIN`: implies CAP_BPF and CAP_PERFMON for BPF purposes.
pub const CAP_SYS_ADMIN: u32 = 21;
/// `CAP_PERFMON`: the verifier's pointer and speculation checks pass only
/// with it (our program uses pointer arithmetic on packet data).
pub const CAP_PERFMON: u32 = 38;
/// `CAP_BPF`: creating maps and loading programs.
pub const CAP_BPF: u32 = 39;

/// A set of capabilities (the bit mask of `/proc/<pid>/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapSet(pub u64);

impl CapSet {
    /// The calling thread's effective set (capabilities are per thread),
    /// from `CapEff` in `/proc/thread-self/status`, else
    /// `/proc/self/status`; `None` if neither can be read (then nothing is
    /// checked in advance).
    pub fn effective() -> Option<CapSet> {
        let status = std::fs::read_to_string("/proc/thread-self/status")
            .or_else(|_| std::fs::read_to_string("/proc/self/status"))
            .ok()?;
        CapSet::parse_status(&status, "CapEff")
    }

    /// The set on line `field:` of a `/proc/<pid>/status` text.
    pub fn parse_status(status: &str, field: &str) -> Option<CapSet> {
        status.lines().find_map(|line| {
            let value = line.strip_prefix(field)?.strip_prefix(':')?;
            u64::from_str_radix(value.trim(), 16).ok().map(CapSet)
        })
    }

    /// Whether capability number `cap` is in the set.
    pub fn has(self, cap: u32) -> bool {
        cap < 64 && self.0 & (1u64 << cap) != 0
    }

    /// The capabilities loading and attaching the XDP program needs that
    /// this set lacks, by name: CAP_BPF, CAP_PERFMON (CAP_SYS_ADMIN stands
    /// for both) and CAP_NET_ADMIN. Locked memory needs nothing since Linux
    /// 5.11 (BPF memory is charged to the memory cgroup).
    pub fn missing_for_xdp(self) -> Vec<&'static str> {
        let admin = self.has(CAP_SYS_ADMIN);
        let mut missing = Vec::new();
        if !self.has(CAP_BPF) && !admin {
            missing.push("CAP_BPF");
        }
        if !self.has(CAP_NET_ADMIN) {
            missing.push("CAP_NET_ADMIN");
        }
        if !self.has(CAP_PERFMON) && !admin {
            missing.push("CAP_PERFMON");
        }
        missing
    }
}

impl fmt::Display for CapSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Real and effective user ID of this process, as `uid N` or `uid N (name)`.
pub fn whoami() -> String {
    // SAFETY: geteuid cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    match user_name(euid) {
        Some(name) => format!("uid {euid} ({name})"),
        None => format!("uid {euid}"),
    }
}

/// The name of `uid` in /etc/passwd, if listed.
pub fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cap_eff_and_names_what_xdp_lacks() {
        let status = "Name:\txorlay\nCapInh:\t0000000000000000\nCapEff:\t000000c000001000\n";
        let set = CapSet::parse_status(status, "CapEff").expect("present");
        assert!(set.has(CAP_BPF) && set.has(CAP_PERFMON) && set.has(CAP_NET_ADMIN));
        assert!(set.missing_for_xdp().is_empty());
        let bpf_net = CapSet((1 << CAP_BPF) | (1 << CAP_NET_ADMIN));
        assert_eq!(bpf_net.missing_for_xdp(), vec!["CAP_PERFMON"]);
        let admin_net = CapSet((1 << CAP_SYS_ADMIN) | (1 << CAP_NET_ADMIN));
        assert!(admin_net.missing_for_xdp().is_empty());
        assert_eq!(
            CapSet(0).missing_for_xdp(),
            vec!["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"]
        );
        assert_eq!(CapSet::parse_status("CapEff:\tzz\n", "CapEff"), None);
    }
}
