//! The kernel's IPv4 forwarding on the relays, and the routes every
//! IP-level baseline needs at gen and the sink.

use std::net::Ipv4Addr;

use super::Env;
use crate::netns::{self, ip};

impl Env {
    pub(super) fn start_linux_forward(&mut self) -> anyhow::Result<()> {
        for i in self.relay_indices() {
            let ns = self.lab.nodes[i].netns.clone();
            netns::run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &ns,
                    "sysctl",
                    "-qw",
                    "net.ipv4.ip_forward=1",
                ],
            )?;
            // Toward the sink: the next node's address on link i.
            let next = Ipv4Addr::new(198, 18, i as u8, 2).to_string();
            ip(&["-n", &ns, "route", "add", "198.18.0.0/15", "via", &next])?;
        }
        self.route_endpoints_across_the_chain()
    }

    /// Routes for IP-level baselines: gen reaches the sink through r1, and
    /// the sink has a route back to gen's source address (or reverse path
    /// filtering, inherited from the host, drops the frames).
    pub(super) fn route_endpoints_across_the_chain(&self) -> anyhow::Result<()> {
        let n = self.lab.sink_index();
        ip(&[
            "-n",
            &self.gen_ns,
            "route",
            "add",
            "198.18.0.0/15",
            "via",
            "198.18.0.2",
        ])?;
        let back = Ipv4Addr::new(198, 18, (n - 1) as u8, 1).to_string();
        ip(&[
            "-n",
            &self.sink_ns,
            "route",
            "add",
            "198.18.0.0/15",
            "via",
            &back,
        ])?;
        Ok(())
    }
}
