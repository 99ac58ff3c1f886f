//! Helpers shared by the integration tests: a network namespace that removes
//! itself, a thread that runs inside it, the commands run there, and
//! (submodules) the XDP tests' frames and program runs.

#![allow(dead_code)] // each test binary uses a different subset

pub mod frames;
pub mod xdp;

use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The tests' one bounded wait: polls a condition until it holds or a
/// timeout passes, and says which (the caller's assert names what it
/// waited for).
pub use xorlay_bench::wait_until;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A network namespace created for one test, deleted on drop (also on panic).
pub struct TestNetns {
    /// Its name, under /run/netns.
    pub name: String,
}

impl TestNetns {
    /// Creates `xlt-<tag>-<pid>-<seq>` with `lo` up.
    pub fn new(tag: &str) -> TestNetns {
        let name = format!(
            "xlt-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let ns = TestNetns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ARGS...`, panicking with stderr on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// `ip -n NAME -batch -` on `commands`, one a line: many changes in one
    /// process. Panics with stderr on failure.
    pub fn ip_batch(&self, commands: &str) {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run ip: {e} (install iproute2)"));
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(commands.as_bytes())
                .unwrap_or_else(|e| panic!("writing to ip -batch: {e}"));
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for ip -batch: {e}"));
        assert!(
            out.status.success(),
            "ip -batch in {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `f` on a thread of its own inside this namespace (setns moves
    /// only the calling thread) and returns its result; a panic in `f`
    /// continues here, so the test fails with its message and the guard
    /// still deletes the namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let name = self.name.clone();
        match std::thread::spawn(move || {
            enter_netns(&name);
            f()
        })
        .join()
        {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let status = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("warning: could not delete test namespace {}", self.name);
        }
    }
}

/// `ip ARGS...`, panicking with stderr on failure.
pub fn ip(args: &[&str]) -> String {
    run("ip", args)
}

/// Runs `program ARGS...` and returns its stdout, panicking with its stderr
/// if it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = match Command::new(program).args(args).output() {
        Ok(output) => output,
        Err(e) => panic!("cannot run {program} {args:?}: {e} (install iproute2)"),
    };
    assert!(
        output.status.success(),
        "{program} {} failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The ifindex of interface `name` in the calling thread's namespace;
/// panics if there is none.
pub fn if_index(name: &str) -> u32 {
    let c_name = std::ffi::CString::new(name).expect("interface name without NUL");
    // SAFETY: valid NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    assert_ne!(index, 0, "no interface {name}");
    index
}

/// "02:00:00:00:00:01" for `ip`.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Moves the calling thread into network namespace `name` (only this
/// thread: setns with CLONE_NEWNET affects the caller alone).
pub fn enter_netns(name: &str) {
    let path = format!("/run/netns/{name}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: a valid namespace fd; setns changes only the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// Internet checksum (RFC 1071) of `parts` concatenated.
pub fn inet_checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// xorshift64*: small, seeded, deterministic randomness for tests.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `bound` (not 0).
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    /// A random byte.
    pub fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    /// A random node ID.
    pub fn id(&mut self) -> xorlay::core::NodeId {
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        xorlay::core::NodeId::from_bytes(bytes)
    }
}

/// A process started by a test, its stderr in a file; on drop it gets
/// SIGTERM, then SIGKILL after 5 s (by its own pid only), also on panic.
pub struct Daemon {
    /// For messages.
    pub tag: String,
    /// `None` once it exited and was reaped.
    pub child: Option<std::process::Child>,
    /// Where its stderr goes.
    pub log: std::path::PathBuf,
}

impl Daemon {
    /// Spawns `command` with stdin and stdout closed, stderr into `log`.
    pub fn spawn(tag: &str, mut command: Command, log: std::path::PathBuf) -> Daemon {
        let file =
            std::fs::File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let child = command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {tag}: {e}"));
        Daemon {
            tag: tag.to_string(),
            child: Some(child),
            log,
        }
    }

    /// Its pid (0 once reaped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, std::process::Child::id)
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Its exit status if it has exited (reaped then).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Waits until its log contains `needle`; panics with the log if it
    /// exits first or `timeout` passes.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let mut exit = None;
        wait_until(timeout, || {
            if self.log().contains(needle) {
                return true;
            }
            exit = self.exited();
            exit.is_some()
        });
        // It may have logged the needle just before exiting.
        if self.log().contains(needle) {
            return;
        }
        match exit {
            Some(status) => panic!(
                "{} exited ({status}) before logging {needle:?}:\n{}",
                self.tag,
                self.log()
            ),
            None => panic!(
                "{} did not log {needle:?} in {timeout:?}:\n{}",
                self.tag,
                self.log()
            ),
        }
    }

    /// Waits for its exit; panics (after killing it) if `timeout` passes.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut exit = None;
        wait_until(timeout, || {
            exit = self.exited();
            exit.is_some()
        });
        match exit {
            Some(status) => status,
            None => {
                self.kill();
                panic!(
                    "{} did not exit within {timeout:?}:\n{}",
                    self.tag,
                    self.log()
                );
            }
        }
    }

    /// Sends `signal` and waits for its exit (`wait_exit`); panics if it
    /// was reaped already.
    pub fn stop(&mut self, signal: i32, timeout: Duration) -> std::process::ExitStatus {
        assert!(self.child.is_some(), "{} already stopped", self.tag);
        self.signal(signal);
        self.wait_exit(timeout)
    }

    /// Sends `signal` to it (nothing once reaped).
    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
            // SAFETY: signalling our own, not yet reaped child.
            unsafe { libc::kill(pid, signal) };
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.signal(libc::SIGTERM);
        if !wait_until(Duration::from_secs(5), || self.exited().is_some()) {
            self.kill();
        }
    }
}
