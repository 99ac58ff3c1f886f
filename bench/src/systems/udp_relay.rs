//! A userspace recvmmsg/sendmmsg UDP relay thread in each relay namespace.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use xorlay::wire::overlay::DEFAULT_PORT;

use super::Env;
use crate::loadgen;
use crate::netns;
use crate::relay::{self, RelayCounters};

impl Env {
    pub(super) fn start_udp_relay(&mut self) -> anyhow::Result<()> {
        let n = self.lab.sink_index();
        self.gen_to = SocketAddr::from(([198, 18, 0, 2], DEFAULT_PORT));
        for i in self.relay_indices() {
            let listen = SocketAddr::from(([198, 18, (i - 1) as u8, 2], DEFAULT_PORT));
            let to = if i + 1 == n {
                self.sink_bind
            } else {
                SocketAddr::from(([198, 18, i as u8, 2], DEFAULT_PORT))
            };
            let counters = Arc::new(RelayCounters::default());
            self.relay_counters.push(counters.clone());
            let stop = self.stop.clone();
            let cpu = self.pinning.relay_cpu;
            let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
            let thread = netns::in_netns(&self.lab.nodes[i].netns, move || {
                if let Some(cpu) = cpu {
                    let _ = loadgen::pin_current_thread(cpu);
                }
                let socket = match loadgen::bind_udp(listen, 8 << 20) {
                    Ok(s) => {
                        // SAFETY: gettid has no preconditions.
                        let _ = ready_tx.send(Ok(unsafe { libc::gettid() }));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                        return Err(e);
                    }
                };
                relay::run(&socket, to, &counters, &stop)
            })?;
            self.threads.push(thread);
            match ready_rx.recv_timeout(Duration::from_secs(5)) {
                Ok(Ok(tid)) => self.relay_tasks.push(tid),
                Ok(Err(e)) => bail!("udp relay: {e}"),
                Err(_) => bail!("udp relay did not start within 5 s"),
            }
        }
        self.notes.push(
            "the relay is a thread of xorlay-bench inside each relay namespace, pinned to the relay CPU"
                .into(),
        );
        Ok(())
    }
}
