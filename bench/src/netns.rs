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
