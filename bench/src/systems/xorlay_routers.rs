//! xorlay: routers on the chain or the two-site mesh, with the benchmark's
//! generator and sink as overlay nodes of their own.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use xorlay::core::NodeId;

use super::Env;
use crate::endpoint::Endpoint;

/// The per-neighbor data budget in the relays' XDP filter during the
/// benchmark: the generator is one neighbor, and the default budget (1 M
/// packets/s per CPU, see `RateLimits::default`) would cap the fast path.
pub(super) const BENCH_RELAY_CONFIG: &str =
    "[xdp.limits]\nneighbor_data = { pps = 100000000, burst = 10000000 }";

impl Env {
    /// Starts the mesh (r1 first, the sink joining through it, then the
    /// other routers) and the generator, which knows site A's routers; waits
    /// until every router has both endpoints, then sends through gen's
    /// XOR-closest peer to the sink.
    pub(super) fn start_mesh_endpoints(&mut self) -> anyhow::Result<()> {
        let sink = self.lab.sink_index();
        let cpu = self.pinning.endpoints_cpu;
        let r1 = self.lab.nodes[1].clone();
        let r1_b = r1.addr_on(1).context("r1's site-B address")?;
        let gen_addr = self.lab.nodes[0].addr_on(0).context("gen's address")?;
        let sink_addr = self.lab.nodes[sink]
            .addr_on(1)
            .context("the sink's address")?;
        self.lab.start_node(1)?;
        self.lab.wait_up(1)?;
        let sink_endpoint = Endpoint::start(
            &self.sink_ns,
            sink_addr,
            self.lab.nodes[sink].identity.clone(),
            vec![(r1.id(), r1_b)],
            cpu,
        )?;
        sink_endpoint.wait_session(&r1.id(), Duration::from_secs(10))?;
        for i in 2..sink {
            self.lab.start_node(i)?;
        }
        for i in 2..sink {
            self.lab.wait_up(i)?;
        }
        // The generator knows every router of its site by ID and address
        // (as a router's [[neighbor]] entries would): its join lookup
        // through r1 alone does not reach the routers that joined before it.
        let routers_on_a: Vec<(NodeId, SocketAddr)> = (1..sink)
            .filter_map(|i| {
                let node = &self.lab.nodes[i];
                node.addr_on(0).map(|addr| (node.id(), addr))
            })
            .collect();
        let gen_endpoint = Endpoint::start(
            &self.gen_ns,
            gen_addr,
            self.lab.nodes[0].identity.clone(),
            routers_on_a,
            cpu,
        )?;
        self.wait_mesh_knows(&gen_endpoint, &sink_endpoint)?;
        let (first_relay, hop_addr) = self.first_hop(&gen_endpoint, &sink_endpoint.id())?;
        self.path.first_relay = first_relay;
        self.adopt_endpoints(gen_endpoint, sink_endpoint, hop_addr);
        self.notes.push(format!(
            "generator and sink are overlay nodes of their own: the sink joined through the seed r1, the generator knows the routers of site A; the generator sends from {gen_addr} to {} at {hop_addr} (its XOR-closest peer to the sink), which forwards to the sink at {sink_addr} over site B",
            self.lab.nodes[first_relay].role
        ));
        Ok(())
    }

    /// Waits until every router of the mesh has both endpoints as next hops
    /// (on its allowlist), as discovery through r1 makes them, for at most
    /// 20 s; the error names what each router lacks.
    fn wait_mesh_knows(
        &self,
        gen_endpoint: &Endpoint,
        sink_endpoint: &Endpoint,
    ) -> anyhow::Result<()> {
        let sink = self.lab.sink_index();
        let (gen_id, sink_id) = (gen_endpoint.id(), sink_endpoint.id());
        let converged = crate::wait_until(Duration::from_secs(20), || {
            (1..sink).all(|i| {
                self.lab
                    .neighbors(i)
                    .is_ok_and(|n| n.contains(&gen_id) && n.contains(&sink_id))
            })
        });
        if !converged {
            let lacking: Vec<String> = (1..sink)
                .map(|i| {
                    let n = self.lab.neighbors(i).unwrap_or_default();
                    format!(
                        "{}: gen {}, sink {}",
                        self.lab.nodes[i].role,
                        if n.contains(&gen_id) { "yes" } else { "no" },
                        if n.contains(&sink_id) { "yes" } else { "no" }
                    )
                })
                .collect();
            bail!(
                "the mesh's routers did not all take both benchmark endpoints as neighbors within 20 s ({}; gen's sessions: {}, the sink's: {})",
                lacking.join("; "),
                gen_endpoint.sessions().len(),
                sink_endpoint.sessions().len()
            );
        }
        Ok(())
    }

    /// The first hop: the router gen has a session with that is XOR-closest
    /// to the sink, as a router would choose; its lab index and address.
    fn first_hop(
        &self,
        gen_endpoint: &Endpoint,
        sink_id: &NodeId,
    ) -> anyhow::Result<(usize, SocketAddr)> {
        let (hop_id, hop_addr) = gen_endpoint
            .sessions()
            .into_iter()
            .filter(|(id, _)| id != sink_id)
            .min_by_key(|(id, _)| id.distance(sink_id))
            .context("gen's endpoint has no session with a router")?;
        let first_relay = self
            .lab
            .nodes
            .iter()
            .position(|n| n.id() == hop_id)
            .context("gen's closest peer is no lab router")?;
        Ok((first_relay, hop_addr))
    }

    /// Generator and sink are these endpoints; the generator sends to `to`.
    fn adopt_endpoints(&mut self, generator: Endpoint, sink: Endpoint, to: SocketAddr) {
        self.gen_bind = generator.addr();
        self.gen_to = to;
        self.sink_bind = sink.addr();
        self.endpoints = Some((generator, sink));
    }

    pub(super) fn start_xorlay_endpoints(&mut self) -> anyhow::Result<()> {
        self.lab.start_relays()?;
        self.lab.wait_converged(Duration::from_secs(20))?;
        let (gen_endpoint, sink_endpoint) =
            crate::endpoint::start_endpoints(&self.lab, self.pinning.endpoints_cpu)?;
        let sink = self.lab.sink_index();
        let gen_addr = gen_endpoint.addr();
        let sink_addr = sink_endpoint.addr();
        let r1_addr = self.lab.nodes[1]
            .addr_on(0)
            .context("r1's address on gen's link")?;
        self.adopt_endpoints(gen_endpoint, sink_endpoint, r1_addr);
        self.notes.push(format!(
            "generator and sink are overlay nodes of their own (xorlay-bench endpoints: the router's control plane, Noise sessions and Kademlia, over one UDP socket), authenticated neighbors of r1 and r{}; the generator sends from {gen_addr} straight to r1 at {r1_addr}, the sink receives at {sink_addr}",
            sink - 1
        ));
        self.notes.push(if self.lab.options.relay_route_cache {
            "relays' XDP route cache on (default config): cached destinations are forwarded in XDP (counters xdp.fwd_tx / xdp.fwd_redirect); IP forwarding is on on the relays' interfaces (bpf_fib_lookup needs it), GRO on every receiving veth, a pass-through XDP program on the endpoints' veths (NAPI for the relays' XDP_TX and XDP_REDIRECT frames; the XDP sink takes its place where used), TX checksum offload on (the fast path completes partial checksums)".to_string()
        } else {
            "relays' config has `[xdp] route_cache = false`: XDP only validates and filters, every packet goes through the io_uring workers".to_string()
        });
        self.notes.push(format!(
            "relays' per-neighbor data budget raised for the benchmark (`{}`): the generator is a single neighbor",
            BENCH_RELAY_CONFIG.replace('\n', " ")
        ));
        let worker_defaults = xorlay::config::Dataplane::default();
        self.notes.push(format!(
            "relays' io_uring workers: {} per relay, at nice {} (`dataplane.worker_nice`), UDP GSO sends {} (`dataplane.gso`); both the router's defaults",
            self.lab.options.workers,
            worker_defaults.worker_nice,
            if worker_defaults.gso { "on" } else { "off" }
        ));
        Ok(())
    }
}
