//! Network namespaces: creation, commands inside them, threads that enter
//! them. Everything here touches only namespaces that the caller created.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};

use anyhow::{Context, bail};

/// Runs a command, failing with its stderr when it exits non-zero.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<Output> {
    let output = Command::new(program).args(args).output().with_context(|| {
        format!("running {program}: is it installed? (`make deps` installs iproute2 and ethtool)")
    })?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

/// `ip ARGS...`, failing on error.
pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    Ok(String::from_utf8_lossy(&run("ip", args)?.stdout).into_owned())
}

/// Names of all network namespaces.
pub fn list() -> Vec<String> {
    ip(&["netns", "list"])
        .map(|out| {
            out.lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `f` on a new thread that has entered namespace `name`; sockets it
/// creates live in that namespace. Other threads are unaffected.
pub fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<T>>> {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).with_context(|| format!("opening {path}"))?;
    let thread_name = format!("ns-{name}");
    std::thread::Builder::new()
        .name(thread_name.chars().take(15).collect())
        .spawn(move || {
            // SAFETY: file is an open namespace fd; CLONE_NEWNET only changes
            // this thread's network namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                bail!("setns into {path}: {}", std::io::Error::last_os_error());
            }
            drop(file);
            f()
        })
        .context("spawning a namespace thread")
}

/// A thread inside a network namespace that first sets itself up (binds
/// its socket, say), reports whether that worked, then runs until stopped.
/// Dropping it stops and joins the thread.
#[derive(Debug)]
pub struct Stoppable<T> {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<T>>>,
}

/// How long a [`Stoppable`] may take to set itself up.
const SETUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl<T: Send + 'static> Stoppable<T> {
    /// Runs `setup` then `run` on a thread inside `name`; returns once
    /// `setup` succeeded, or with its error.
    pub fn start<S: 'static>(
        name: &str,
        setup: impl FnOnce() -> anyhow::Result<S> + Send + 'static,
        run: impl FnOnce(S, &std::sync::atomic::AtomicBool) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<Stoppable<T>> {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let thread = {
            let stop = stop.clone();
            in_netns(name, move || {
                let state = match setup() {
                    Ok(state) => {
                        let _ = ready_tx.send(Ok(()));
                        state
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                        return Err(e);
                    }
                };
                run(state, &stop)
            })?
        };
        let mut started = Stoppable {
            stop,
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(SETUP_TIMEOUT) {
            Ok(Ok(())) => Ok(started),
            Ok(Err(e)) => {
                started.thread.take().map(std::thread::JoinHandle::join);
                bail!("{e}")
            }
            Err(_) => bail!("thread in {name} did not set itself up within {SETUP_TIMEOUT:?}"),
        }
    }

    /// Stops the thread and returns what it returned.
    pub fn finish(mut self) -> anyhow::Result<T> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| anyhow::anyhow!("thread panicked"))?,
            None => bail!("already finished"),
        }
    }
}

impl<T> Drop for Stoppable<T> {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// (ifindex, MAC address) of interface `dev` in namespace `ns`, from
/// `ip -j link`.
pub fn link_info(ns: &str, dev: &str) -> anyhow::Result<(u32, [u8; 6])> {
    let out = ip(&["-n", ns, "-j", "link", "show", "dev", dev])
        .with_context(|| format!("interface {dev} in namespace {ns}"))?;
    let json: serde_json::Value = serde_json::from_str(&out).context("parsing `ip -j link`")?;
    let link = json.get(0).context("ip -j link: empty")?;
    let ifindex = link
        .get("ifindex")
        .and_then(serde_json::Value::as_u64)
        .and_then(|i| u32::try_from(i).ok())
        .with_context(|| format!("no ifindex for {dev} in namespace {ns}"))?;
    let text = link
        .get("address")
        .and_then(serde_json::Value::as_str)
        .with_context(|| format!("no MAC address for {dev} in namespace {ns}"))?;
    Ok((ifindex, parse_mac(text)?))
}

/// "aa:bb:cc:dd:ee:ff" to bytes.
pub fn parse_mac(text: &str) -> anyhow::Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts
            .next()
            .with_context(|| format!("MAC {text}: too short"))?;
        *byte = u8::from_str_radix(part, 16).with_context(|| format!("MAC {text}"))?;
    }
    if parts.next().is_some() {
        bail!("MAC {text}: too long");
    }
    Ok(mac)
}

/// The ifindex of `ifname` in the calling thread's namespace.
pub fn ifindex_here(ifname: &str) -> Option<u32> {
    let name = std::ffi::CString::new(ifname).ok()?;
    // SAFETY: name is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// (tid, comm) of every NAPI kernel thread.
pub fn napi_threads() -> std::collections::BTreeSet<(i32, String)> {
    let mut set = std::collections::BTreeSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return set;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            && comm.starts_with("napi/")
        {
            set.insert((pid, comm.trim().to_string()));
        }
    }
    set
}
