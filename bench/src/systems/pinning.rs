//! CPU plumbing: where processes, worker threads and NAPI threads run,
//! their priority, and their CPU time.

use anyhow::{Context, bail};
use serde::Serialize;

use super::{Env, SystemKind};
use crate::loadgen::{pin_process, pin_task};
use crate::netns;

/// Where the processes and NAPI threads of a run are pinned.
#[derive(Debug, Clone, Serialize)]
pub struct Pinning {
    /// CPUs the machine offers to this process.
    pub cpus: usize,
    /// CPU of the generator and the sink (threads, their routers and NAPI
    /// threads); None when not pinned.
    pub endpoints_cpu: Option<usize>,
    /// CPU of the relays (processes, threads, NAPI threads).
    pub relay_cpu: Option<usize>,
    /// What was pinned, for the record.
    pub pinned: Vec<String>,
}

impl Pinning {
    /// Relays on the last CPU, endpoints on CPU 0, when there are two or more.
    pub fn plan() -> Pinning {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (endpoints_cpu, relay_cpu) = if cpus >= 2 {
            (Some(0), Some(cpus - 1))
        } else {
            (None, None)
        };
        Pinning {
            cpus,
            endpoints_cpu,
            relay_cpu,
            pinned: Vec::new(),
        }
    }
}

impl Env {
    /// GRO on every receiving interface, threaded NAPI on the relays' and
    /// the sink's, every NAPI thread and process pinned.
    pub(super) fn tune_and_pin(&mut self) -> anyhow::Result<()> {
        let sink = self.lab.sink_index();
        let mut plan: Vec<(usize, Option<usize>)> = Vec::new();
        for i in 1..=sink {
            let cpu = if i == sink {
                self.pinning.endpoints_cpu
            } else {
                self.pinning.relay_cpu
            };
            plan.push((i, cpu));
        }
        for (i, cpu) in plan {
            let node = self.lab.nodes[i].clone();
            for iface in &node.ifaces {
                self.tune_iface(&node, iface, i == sink, cpu)?;
            }
        }
        self.pin_processes()
    }

    /// GRO and threaded NAPI on interface `iface` of `node` (timer polling
    /// too on the sink's when asked for), its new NAPI threads counted as
    /// the relays' (unless `node` is the sink) and pinned to `cpu`; the
    /// sink's get real-time priority.
    fn tune_iface(
        &mut self,
        node: &crate::lab::Node,
        iface: &crate::lab::Iface,
        is_sink: bool,
        cpu: Option<usize>,
    ) -> anyhow::Result<()> {
        let _ = netns::run(
            "ip",
            &[
                "netns",
                "exec",
                &node.netns,
                "ethtool",
                "-K",
                &iface.name,
                "gro",
                "on",
            ],
        );
        let before = crate::netns::napi_threads();
        let path = format!("/sys/class/net/{}/threaded", iface.name);
        netns::run(
            "ip",
            &[
                "netns",
                "exec",
                &node.netns,
                "sh",
                "-c",
                &format!("echo 1 > {path}"),
            ],
        )
        .with_context(|| format!("threaded NAPI on {} {}", node.role, iface.name))?;
        if is_sink && let Some(poll) = self.traffic.sink_poll {
            let script = format!(
                "echo {} > /sys/class/net/{name}/napi_defer_hard_irqs && echo {} > /sys/class/net/{name}/gro_flush_timeout",
                poll.defer,
                poll.timeout_ns,
                name = iface.name
            );
            netns::run("ip", &["netns", "exec", &node.netns, "sh", "-c", &script])
                .with_context(|| format!("timer polling on the sink's {}", iface.name))?;
            self.pinning.pinned.push(format!(
                "sink {} polled by timer: napi_defer_hard_irqs {}, gro_flush_timeout {} ns",
                iface.name, poll.defer, poll.timeout_ns
            ));
        }
        let new: Vec<(i32, String)> = crate::netns::napi_threads()
            .into_iter()
            .filter(|t| !before.contains(t))
            .collect();
        self.place_napi_threads(node, iface, &new, is_sink, cpu);
        Ok(())
    }

    /// Counts the NAPI threads `new` of `iface` as the relays' (unless
    /// `node` is the sink), pins them to `cpu` and gives the sink's
    /// real-time priority.
    fn place_napi_threads(
        &mut self,
        node: &crate::lab::Node,
        iface: &crate::lab::Iface,
        new: &[(i32, String)],
        is_sink: bool,
        cpu: Option<usize>,
    ) {
        if !is_sink {
            self.relay_tasks.extend(new.iter().map(|(tid, _)| *tid));
        }
        if let Some(cpu) = cpu {
            for (tid, comm) in new {
                if pin_task(*tid, cpu).is_ok() {
                    self.pinning.pinned.push(format!(
                        "{} {} NAPI thread {comm} -> CPU {cpu}",
                        node.role, iface.name
                    ));
                }
            }
        }
        // The sink's receive path shares its CPU with a generator
        // that spins (live frames, pacing): at normal priority the
        // NAPI thread waits for a scheduler slice while its veth
        // ring (256 frames) overflows, and that loss would be
        // charged to the system under test. Real-time priority lets
        // it run as soon as frames arrive.
        if is_sink {
            for (tid, comm) in new {
                if set_fifo(*tid, SINK_NAPI_PRIORITY).is_ok() {
                    self.pinning.pinned.push(format!(
                        "{} {} NAPI thread {comm}: SCHED_FIFO {SINK_NAPI_PRIORITY}",
                        node.role, iface.name
                    ));
                }
            }
        }
    }

    /// The routers' processes (xorlay), pinned by role; relay workers
    /// spread over the CPUs when there are several.
    fn pin_processes(&mut self) -> anyhow::Result<()> {
        let sink = self.lab.sink_index();
        for i in 0..=sink {
            let Some(pid) = self.lab.pid(i) else { continue };
            let cpu = if i == 0 || i == sink {
                self.pinning.endpoints_cpu
            } else {
                self.pinning.relay_cpu
            };
            if i != 0 && i != sink {
                self.relay_tasks.extend(process_tasks(pid));
            }
            if let Some(cpu) = cpu {
                let n = pin_process(pid, cpu)
                    .with_context(|| format!("pinning {}", self.lab.nodes[i].role))?;
                self.pinning.pinned.push(format!(
                    "{} router (pid {pid}, {n} threads) -> CPU {cpu}",
                    self.lab.nodes[i].role
                ));
                if i != 0 && i != sink && self.lab.options.workers > 1 {
                    self.spread_workers(i, pid, cpu)?;
                }
            }
        }
        if let Some(cpu) = self.pinning.relay_cpu
            && self.kind == SystemKind::UdpRelay
        {
            self.pinning
                .pinned
                .push(format!("udp relay threads -> CPU {cpu}"));
        }
        if let Some(cpu) = self.pinning.endpoints_cpu {
            self.pinning
                .pinned
                .push(format!("generator and sink threads -> CPU {cpu}"));
        }
        Ok(())
    }

    /// Pins worker k of relay `node` (pid `pid`, all of it on `relay_cpu`
    /// so far) to CPU `relay_cpu - k` (wrapping): with two CPUs, worker 0
    /// stays on the relay CPU and worker 1 goes to the endpoints' CPU,
    /// which it shares with the generator and the sink.
    fn spread_workers(&mut self, node: usize, pid: u32, relay_cpu: usize) -> anyhow::Result<()> {
        let cpus = self.pinning.cpus.max(1);
        let mut found = 0;
        for tid in process_tasks(pid) {
            let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")) else {
                continue;
            };
            let Some(k) = comm
                .trim()
                .strip_prefix("xorlay-worker-")
                .and_then(|k| k.parse::<usize>().ok())
            else {
                continue;
            };
            let cpu = (relay_cpu + cpus - k % cpus) % cpus;
            pin_task(tid, cpu)
                .with_context(|| format!("pinning worker {k} of {}", self.lab.nodes[node].role))?;
            self.pinning.pinned.push(format!(
                "{} worker {k} (tid {tid}) -> CPU {cpu}",
                self.lab.nodes[node].role
            ));
            found += 1;
        }
        if found != self.lab.options.workers {
            bail!(
                "{}: found {found} worker threads, expected {}",
                self.lab.nodes[node].role,
                self.lab.options.workers
            );
        }
        Ok(())
    }
}

/// Real-time priority of the sink's NAPI threads.
pub(crate) const SINK_NAPI_PRIORITY: i32 = 50;

/// Gives task `tid` SCHED_FIFO at `priority`.
pub(crate) fn set_fifo(tid: i32, priority: i32) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: sched_setscheduler with a valid sched_param.
    if unsafe { libc::sched_setscheduler(tid, libc::SCHED_FIFO, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Thread IDs of process `pid`.
fn process_tasks(pid: u32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// Nanoseconds `tasks` have run on a CPU, from `/proc/<tid>/schedstat` (the
/// scheduler's own accounting; tick-based figures are wrong in these VMs).
/// None when the kernel does not provide it.
pub fn tasks_run_ns(tasks: &[i32]) -> Option<u64> {
    let mut total = 0u64;
    let mut any = false;
    for tid in tasks {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{tid}/schedstat")) else {
            continue;
        };
        if let Some(ns) = text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            total += ns;
            any = true;
        }
    }
    any.then_some(total)
}
