//! The "XDP redirect, no lookup" ceiling, and the same program as the
//! pass-through XDP program that gives a veth NAPI.

use anyhow::Context;

use super::{Env, SINK_PORT};
use crate::netns::{self, link_info};

/// The compiled "XDP redirect, no lookup" program.
static REDIRECT_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/redirect.bpf.o"));

impl Env {
    pub(super) fn start_xdp_redirect(&mut self) -> anyhow::Result<()> {
        // Same routes as Linux forwarding at gen and the sink (frames go to
        // r1's MAC); the relays never look at them: XDP redirects first.
        self.route_endpoints_across_the_chain()?;
        // This baseline is the cheapest relay XDP can be: it never touches a
        // checksum. A socket sender with TX checksum offload (veth's
        // default) leaves UDP checksums unfinished, and a frame redirected
        // in XDP loses the metadata that would finish them, so the sink's
        // stack would drop every datagram (UdpInCsumErrors). Offload off on
        // gen's interface, for this baseline only: its sender then finishes
        // each checksum itself (xorlay's fast path completes them instead,
        // docs/xdp.md).
        let gen_ns = self.lab.nodes[0].netns.clone();
        netns::run(
            "ip",
            &[
                "netns", "exec", &gen_ns, "ethtool", "-K", "east", "tx", "off",
            ],
        )?;
        let n = self.lab.sink_index();
        for i in self.relay_indices() {
            let ns = self.lab.nodes[i].netns.clone();
            let (out_ifindex, smac) = link_info(&ns, "east")?;
            let (_, dmac) = link_info(&self.lab.nodes[i + 1].netns, "west")?;
            let (in_ifindex, _) = link_info(&ns, "west")?;
            let mut cfg = [0u8; 20];
            cfg[..4].copy_from_slice(&out_ifindex.to_ne_bytes());
            cfg[4..6].copy_from_slice(&SINK_PORT.to_ne_bytes());
            cfg[6..12].copy_from_slice(&dmac);
            cfg[12..18].copy_from_slice(&smac);
            self.xdp.push(load_redirect(&ns, cfg, in_ifindex)?);
        }
        // The last relay redirects into the sink's veth, which needs NAPI:
        // an XDP program on it (this one with port 0 passes every frame).
        let sink_ns = self.lab.nodes[n].netns.clone();
        let (sink_ifindex, _) = link_info(&sink_ns, "west")?;
        self.xdp
            .push(load_redirect(&sink_ns, [0u8; 20], sink_ifindex)?);
        self.notes.push(
            "the XDP program rewrites both MACs and bpf_redirect()s to the other veth; the sink's veth has an XDP_PASS program (NAPI for redirected frames)"
                .into(),
        );
        Ok(())
    }
}

/// Attaches a pass-through XDP program (native mode) to interface `dev` of
/// namespace `ns`: the redirect program with a zero config, which passes
/// every frame (its port is 0, which no UDP traffic of the lab uses). A veth
/// that receives XDP_TX or XDP_REDIRECT frames from its peer needs NAPI, and
/// GRO alone is not enough for XDP_TX (docs/xdp.md). Detached when the
/// returned object is dropped.
pub(crate) fn attach_passthrough(ns: &str, dev: &str) -> anyhow::Result<aya::Ebpf> {
    let (ifindex, _) = link_info(ns, dev)?;
    load_redirect(ns, [0u8; 20], ifindex)
        .with_context(|| format!("pass-through XDP on {dev} in namespace {ns}"))
}

/// Loads the redirect program with `cfg` and attaches it (native mode) to
/// interface `ifindex` of namespace `ns`.
fn load_redirect(ns: &str, cfg: [u8; 20], ifindex: u32) -> anyhow::Result<aya::Ebpf> {
    netns::in_netns(ns, move || {
        let mut ebpf = aya::EbpfLoader::new()
            .override_global("xl_cfg", &cfg, true)
            .load(REDIRECT_OBJECT)
            .context("loading the redirect object")?;
        let program: &mut aya::programs::Xdp = ebpf
            .program_mut("xl_redirect")
            .context("xl_redirect in the object")?
            .try_into()
            .context("xl_redirect is XDP")?;
        program.load().context("verifier")?;
        program
            .attach_to_if_index(ifindex, aya::programs::XdpMode::Driver)
            .context("attach in native mode")?;
        Ok(ebpf)
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("XDP loader panicked"))?
}
